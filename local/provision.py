"""Build analytics_infra/template.yaml's resources on a local AWS endpoint by interpreting it."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any, Final

import boto3
import yaml
from botocore.exceptions import ClientError

DEFAULT_TEMPLATE: Final = (
    Path(__file__).resolve().parent.parent / "analytics_infra" / "template.yaml"
)

JsonDict = dict[str, Any]


class ProvisioningError(Exception):
    """The template uses something this provisioner does not implement, or is inconsistent."""


# ---------------------------------------------------------------------------- template loading


class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader that turns the CloudFormation short-form tags into their long forms."""


def _ref(loader: yaml.SafeLoader, node: yaml.Node) -> JsonDict:
    return {"Ref": _scalar(loader, node, "!Ref")}


def _get_att(loader: yaml.SafeLoader, node: yaml.Node) -> JsonDict:
    if isinstance(node, yaml.ScalarNode):
        logical_id, _, attribute = str(loader.construct_scalar(node)).partition(".")
        return {"Fn::GetAtt": [logical_id, attribute]}
    return {"Fn::GetAtt": _sequence(loader, node, "!GetAtt")}


def _sub(loader: yaml.SafeLoader, node: yaml.Node) -> JsonDict:
    if isinstance(node, yaml.ScalarNode):
        return {"Fn::Sub": loader.construct_scalar(node)}
    return {"Fn::Sub": _sequence(loader, node, "!Sub")}


def _join(loader: yaml.SafeLoader, node: yaml.Node) -> JsonDict:
    return {"Fn::Join": _sequence(loader, node, "!Join")}


def _select(loader: yaml.SafeLoader, node: yaml.Node) -> JsonDict:
    return {"Fn::Select": _sequence(loader, node, "!Select")}


def _unsupported_tag(_loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    raise ProvisioningError(
        f"unsupported CloudFormation tag !{suffix} (line {node.start_mark.line + 1})"
    )


def _scalar(loader: yaml.SafeLoader, node: yaml.Node, tag: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise ProvisioningError(f"{tag} takes a scalar (line {node.start_mark.line + 1})")
    return str(loader.construct_scalar(node))


def _sequence(loader: yaml.SafeLoader, node: yaml.Node, tag: str) -> list[Any]:
    if not isinstance(node, yaml.SequenceNode):
        raise ProvisioningError(f"{tag} takes a list here (line {node.start_mark.line + 1})")
    return loader.construct_sequence(node, deep=True)


_TemplateLoader.add_constructor("!Ref", _ref)
_TemplateLoader.add_constructor("!GetAtt", _get_att)
_TemplateLoader.add_constructor("!Sub", _sub)
_TemplateLoader.add_constructor("!Join", _join)
_TemplateLoader.add_constructor("!Select", _select)
_TemplateLoader.add_multi_constructor("!", _unsupported_tag)


def load_template(path: Path | str = DEFAULT_TEMPLATE) -> JsonDict:
    """Parse a CloudFormation YAML template, short-form tags expanded to their long forms."""
    with Path(path).open(encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=_TemplateLoader)  # noqa: S506 (a SafeLoader subclass)
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise ProvisioningError(f"{path}: not a CloudFormation template with Resources")
    return document


# ---------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class ProvisionedResource:
    """One created (or found) resource: what !Ref and !GetAtt return for it."""

    logical_id: str
    resource_type: str
    physical_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    # The resource this one lives in, where its API needs it: the user pool of a client or
    # group, the database of a table, the log group of a log stream.
    parent_id: str | None = None


@dataclass(frozen=True)
class ProvisionedStack:
    """The local equivalent of a deployed stack: its resources and its outputs."""

    stack_name: str
    region: str
    resources: Mapping[str, ProvisionedResource]
    outputs: Mapping[str, str]


# ---------------------------------------------------------------------------- interpretation

_TEMPLATE_SECTIONS: Final = frozenset(
    {"AWSTemplateFormatVersion", "Description", "Metadata", "Parameters", "Resources", "Outputs"}
)
_RESOURCE_KEYS: Final = frozenset(
    {"Type", "Properties", "DependsOn", "DeletionPolicy", "UpdateReplacePolicy", "Metadata"}
)
_PARAMETER_KEYS: Final = frozenset(
    {
        "Type",
        "Default",
        "Description",
        "AllowedPattern",
        "AllowedValues",
        "ConstraintDescription",
        "MinLength",
        "MaxLength",
    }
)
_OUTPUT_KEYS: Final = frozenset({"Description", "Value"})
_SUB_VARIABLE: Final = re.compile(r"\$\{([^}]+)\}")


class _Clients:
    """One boto3 client per service, all on the same session, region and endpoint."""

    def __init__(self, session: Any, region: str, endpoint_url: str | None) -> None:
        self._session = session
        self._region = region
        self._endpoint_url = endpoint_url
        self._cache: dict[str, Any] = {}

    @property
    def plain_http(self) -> bool:
        """Whether requests reach the endpoint without TLS (the local moto server)."""
        endpoint = self._endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")
        return endpoint.startswith("http://")

    def __call__(self, service: str) -> Any:
        if service not in self._cache:
            self._cache[service] = self._session.client(
                service, region_name=self._region, endpoint_url=self._endpoint_url
            )
        return self._cache[service]


@dataclass
class _Context:
    """Everything a resource handler needs: clients, names and what exists so far."""

    clients: _Clients
    stack_name: str
    region: str
    account_id: str
    partition: str
    parameters: dict[str, str]
    resources: dict[str, ProvisionedResource] = field(default_factory=dict)

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        """An ARN in this stack's partition, region and account."""
        return ":".join(
            [
                "arn",
                self.partition,
                service,
                self.region if region else "",
                self.account_id if account else "",
                resource,
            ]
        )

    def generated_name(self, logical_id: str, max_length: int) -> str:
        """A name for a resource the template leaves unnamed (deterministic, so reruns reuse)."""
        return f"{self.stack_name}-{logical_id}"[:max_length]

    def pseudo(self, name: str) -> str:
        values = {
            "AWS::AccountId": self.account_id,
            "AWS::Region": self.region,
            "AWS::StackName": self.stack_name,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com.cn" if self.partition == "aws-cn" else "amazonaws.com",
        }
        if name not in values:
            raise ProvisioningError(f"unsupported pseudo parameter {name}")
        return values[name]

    # -- intrinsic functions -------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """Evaluate the intrinsic functions in a template fragment."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            functions: dict[str, Callable[[Any], Any]] = {
                "Ref": lambda name: self.ref(str(name)),
                "Fn::GetAtt": self.get_att,
                "Fn::Sub": self.sub,
                "Fn::Join": self.join,
                "Fn::Select": self.select,
            }
            if key in functions:
                return functions[key](argument)
            if key.startswith("Fn::") or key == "Condition":
                raise ProvisioningError(f"unsupported intrinsic function {key}")
        return {key: self.resolve(item) for key, item in value.items()}

    def ref(self, name: str) -> str:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            return self.resources[name].physical_id
        raise ProvisioningError(f"Ref to {name}: no such parameter, or not created yet")

    def get_att(self, argument: Any) -> str:
        if isinstance(argument, str):
            argument = argument.split(".", 1)
        if not (isinstance(argument, list) and len(argument) == 2):
            raise ProvisioningError(f"Fn::GetAtt takes [LogicalId, Attribute], got {argument!r}")
        logical_id, attribute = str(argument[0]), str(self.resolve(argument[1]))
        resource = self.resources.get(logical_id)
        if resource is None:
            raise ProvisioningError(f"GetAtt {logical_id}.{attribute}: no such resource created")
        if attribute not in resource.attributes:
            raise ProvisioningError(
                f"GetAtt {logical_id}.{attribute}: the local provisioner does not compute "
                f"{attribute} for {resource.resource_type}"
            )
        return resource.attributes[attribute]

    def sub(self, argument: Any) -> str:
        if isinstance(argument, str):
            text, variables = argument, {}
        elif isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], dict):
            text, variables = str(argument[0]), {k: self.resolve(v) for k, v in argument[1].items()}
        else:
            raise ProvisioningError(
                f"Fn::Sub takes a string or [string, mapping], got {argument!r}"
            )

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is the escape for a literal ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return self.get_att(name.split(".", 1))
            return self.ref(name)

        return _SUB_VARIABLE.sub(substitute, text)

    def join(self, argument: Any) -> str:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise ProvisioningError(f"Fn::Join takes [delimiter, list], got {argument!r}")
        items = self.resolve(argument[1])
        if not isinstance(items, list):
            raise ProvisioningError(f"Fn::Join needs a list to join, got {items!r}")
        return str(argument[0]).join(str(item) for item in items)

    def select(self, argument: Any) -> Any:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise ProvisioningError(f"Fn::Select takes [index, list], got {argument!r}")
        index, items = int(self.resolve(argument[0])), self.resolve(argument[1])
        if not isinstance(items, list) or not 0 <= index < len(items):
            raise ProvisioningError(f"Fn::Select index {index} out of range for {items!r}")
        return items[index]


def _references(value: Any) -> Iterator[str]:
    """Every name a template fragment refers to through Ref, GetAtt or Sub."""
    if isinstance(value, list):
        for item in value:
            yield from _references(item)
    elif isinstance(value, dict):
        for key, argument in value.items():
            if key == "Ref" and isinstance(argument, str):
                yield argument
            elif key == "Fn::GetAtt":
                yield (argument.split(".", 1)[0] if isinstance(argument, str) else str(argument[0]))
            elif key == "Fn::Sub":
                text = argument if isinstance(argument, str) else str(argument[0])
                local = set(argument[1]) if isinstance(argument, list) else set()
                for name in _SUB_VARIABLE.findall(text):
                    if not name.startswith("!") and name not in local:
                        yield name.split(".", 1)[0]
                if isinstance(argument, list):
                    yield from _references(argument[1])
            else:
                yield from _references(argument)


def _creation_order(resources: Mapping[str, Any]) -> list[str]:
    """Logical ids ordered so that every resource comes after what it depends on."""
    graph: dict[str, set[str]] = {}
    for logical_id, definition in resources.items():
        depends_on = definition.get("DependsOn", [])
        explicit = {depends_on} if isinstance(depends_on, str) else set(depends_on)
        unknown = explicit - set(resources)
        if unknown:
            raise ProvisioningError(f"{logical_id} DependsOn unknown resource(s) {sorted(unknown)}")
        referenced = set(_references(definition.get("Properties", {}))) & set(resources)
        graph[logical_id] = explicit | referenced
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise ProvisioningError(f"circular dependency between resources {error.args[1]}") from error


def _parameter_values(declared: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    """Template parameters with their defaults, overridden and validated like CloudFormation."""
    unknown = set(overrides) - set(declared)
    if unknown:
        raise ProvisioningError(f"unknown template parameter(s) {sorted(unknown)}")
    values: dict[str, str] = {}
    for name, spec in declared.items():
        extra = set(spec) - _PARAMETER_KEYS
        if extra:
            raise ProvisioningError(f"parameter {name}: unsupported key(s) {sorted(extra)}")
        if spec.get("Type") != "String":
            raise ProvisioningError(f"parameter {name}: only Type String is supported")
        if name in overrides:
            value = str(overrides[name])
        elif "Default" in spec:
            value = str(spec["Default"])
        else:
            raise ProvisioningError(f"parameter {name} has no default and no value was given")
        pattern = spec.get("AllowedPattern")
        allowed = spec.get("AllowedValues")
        if pattern is not None and not re.fullmatch(str(pattern), value):
            raise ProvisioningError(f"parameter {name}={value!r} does not match {pattern}")
        if allowed is not None and value not in [str(item) for item in allowed]:
            raise ProvisioningError(f"parameter {name}={value!r} is not one of {allowed}")
        if not int(spec.get("MinLength", 0)) <= len(value) <= int(spec.get("MaxLength", 4096)):
            raise ProvisioningError(f"parameter {name}={value!r} has the wrong length")
        values[name] = value
    return values


# ---------------------------------------------------------------------------- resource handlers
#
# One handler per resource type. Each declares every property it understands: the ones it
# applies through the API and the few that only mean something to CloudFormation itself.
# A property outside that set fails provisioning, so the template cannot outgrow the local
# stack without someone noticing.

_Handler = Callable[[_Context, str, JsonDict], ProvisionedResource]
_Probe = Callable[[_Clients, ProvisionedResource], Any]


@dataclass(frozen=True)
class _ResourceKind:
    create: _Handler
    probe: _Probe  # a describe/get call that raises a "not found" ClientError if it is gone
    properties: frozenset[str]


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _pick(props: Mapping[str, Any], *names: str) -> JsonDict:
    return {name: props[name] for name in names if name in props}


_POOL_SETTINGS: Final = (
    "Policies",
    "Schema",
    "AdminCreateUserConfig",
    "UsernameConfiguration",
    "AutoVerifiedAttributes",
    "AccountRecoverySetting",
    "MfaConfiguration",
)


def _user_pool(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    cognito = ctx.clients("cognito-idp")
    name = props.get("UserPoolName") or ctx.generated_name(logical_id, 128)
    pool_id = None
    for page in cognito.get_paginator("list_user_pools").paginate(MaxResults=60):
        pool_id = next((p["Id"] for p in page["UserPools"] if p["Name"] == name), pool_id)
    if pool_id is None:
        settings = _pick(props, *_POOL_SETTINGS)
        pool_id = cognito.create_user_pool(PoolName=name, **settings)["UserPool"]["Id"]
    provider = f"cognito-idp.{ctx.region}.amazonaws.com/{pool_id}"
    return ProvisionedResource(
        logical_id,
        "AWS::Cognito::UserPool",
        str(pool_id),
        {
            "Arn": ctx.arn("cognito-idp", f"userpool/{pool_id}"),
            "ProviderName": provider,
            "ProviderURL": f"https://{provider}",
            "UserPoolId": str(pool_id),
        },
    )


_CLIENT_SETTINGS: Final = (
    "ExplicitAuthFlows",
    "ReadAttributes",
    "WriteAttributes",
    "IdTokenValidity",
    "AccessTokenValidity",
    "RefreshTokenValidity",
    "TokenValidityUnits",
    "PreventUserExistenceErrors",
    "EnableTokenRevocation",
)


def _user_pool_client(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    cognito = ctx.clients("cognito-idp")
    pool_id = str(props["UserPoolId"])
    name = props.get("ClientName") or ctx.generated_name(logical_id, 128)
    settings = _pick(props, *_CLIENT_SETTINGS)
    client_id = None
    for page in cognito.get_paginator("list_user_pool_clients").paginate(
        UserPoolId=pool_id, MaxResults=60
    ):
        client_id = next(
            (c["ClientId"] for c in page["UserPoolClients"] if c["ClientName"] == name), client_id
        )
    if client_id is None:
        client_id = cognito.create_user_pool_client(
            UserPoolId=pool_id,
            ClientName=name,
            GenerateSecret=bool(props.get("GenerateSecret", False)),
            **settings,
        )["UserPoolClient"]["ClientId"]
    else:  # keep an existing client in step with the template (the secret cannot change)
        cognito.update_user_pool_client(
            UserPoolId=pool_id, ClientId=client_id, ClientName=name, **settings
        )
    return ProvisionedResource(
        logical_id,
        "AWS::Cognito::UserPoolClient",
        str(client_id),
        {"ClientId": str(client_id), "Name": str(name)},
        parent_id=pool_id,
    )


def _user_pool_group(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    cognito = ctx.clients("cognito-idp")
    pool_id = str(props["UserPoolId"])
    group = {"GroupName": props.get("GroupName") or ctx.generated_name(logical_id, 128)}
    group.update(_pick(props, "Description", "Precedence"))
    try:
        cognito.create_group(UserPoolId=pool_id, **group)
    except ClientError as error:
        if _error_code(error) != "GroupExistsException":
            raise
        cognito.update_group(UserPoolId=pool_id, **group)
    return ProvisionedResource(
        logical_id, "AWS::Cognito::UserPoolGroup", str(group["GroupName"]), parent_id=pool_id
    )


def _lifecycle_rule(rule: Mapping[str, Any]) -> JsonDict:
    """A CloudFormation lifecycle rule in the shape of the S3 API."""
    known = {
        "Id",
        "Status",
        "Prefix",
        "ExpirationInDays",
        "NoncurrentVersionExpiration",
        "AbortIncompleteMultipartUpload",
    }
    extra = set(rule) - known
    if extra:
        raise ProvisioningError(
            f"lifecycle rule {rule.get('Id')}: unsupported key(s) {sorted(extra)}"
        )
    converted: JsonDict = {"Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "Id" in rule:
        converted["ID"] = rule["Id"]
    if "ExpirationInDays" in rule:
        converted["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    converted.update(_pick(rule, "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload"))
    return converted


def _encryption_rule(rule: Mapping[str, Any]) -> JsonDict:
    """A CloudFormation default-encryption rule in the shape of the S3 API."""
    extra = set(rule) - {"ServerSideEncryptionByDefault", "BucketKeyEnabled"}
    if extra:
        raise ProvisioningError(f"bucket encryption rule: unsupported key(s) {sorted(extra)}")
    converted = _pick(rule, "BucketKeyEnabled")
    if "ServerSideEncryptionByDefault" in rule:
        converted["ApplyServerSideEncryptionByDefault"] = rule["ServerSideEncryptionByDefault"]
    return converted


def _bucket(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    s3 = ctx.clients("s3")
    name = str(props.get("BucketName") or ctx.generated_name(logical_id, 63).lower())
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as error:
        if _error_code(error) not in {"404", "NoSuchBucket", "NotFound"}:
            raise
        location = {}
        if ctx.region != "us-east-1":
            location = {"CreateBucketConfiguration": {"LocationConstraint": ctx.region}}
        s3.create_bucket(Bucket=name, **location)
    if "BucketEncryption" in props:
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    _encryption_rule(rule)
                    for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                ]
            },
        )
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
        )
    if "OwnershipControls" in props:
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=props["OwnershipControls"])
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(
            Bucket=name, VersioningConfiguration=props["VersioningConfiguration"]
        )
    if "LifecycleConfiguration" in props:
        rules = [_lifecycle_rule(rule) for rule in props["LifecycleConfiguration"]["Rules"]]
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
    return ProvisionedResource(
        logical_id,
        "AWS::S3::Bucket",
        name,
        {
            "Arn": ctx.arn("s3", name, region=False, account=False),
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{ctx.region}.amazonaws.com",
        },
    )


def _requires_tls(statement: Mapping[str, Any]) -> bool:
    condition = statement.get("Condition", {}).get("Bool", {})
    return str(condition.get("aws:SecureTransport", "")).lower() == "false"


def _probe_bucket_policy(clients: _Clients, resource: ProvisionedResource) -> Any:
    if clients.plain_http:
        # Locally the only statement (deny without TLS) is left out; the bucket is what exists.
        return clients("s3").head_bucket(Bucket=resource.physical_id)
    return clients("s3").get_bucket_policy(Bucket=resource.physical_id)


def _bucket_policy(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    bucket = str(props["Bucket"])
    document = dict(props["PolicyDocument"])
    if ctx.clients.plain_http:
        # The local endpoint speaks plain HTTP on loopback, and moto enforces bucket policies:
        # a deny-unless-TLS statement would refuse every read there. It still applies on AWS.
        document["Statement"] = [s for s in document["Statement"] if not _requires_tls(s)]
    if document["Statement"]:
        ctx.clients("s3").put_bucket_policy(Bucket=bucket, Policy=json.dumps(document))
    return ProvisionedResource(logical_id, "AWS::S3::BucketPolicy", bucket)


def _log_group(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    logs = ctx.clients("logs")
    name = str(props.get("LogGroupName") or ctx.generated_name(logical_id, 512))
    try:
        logs.create_log_group(logGroupName=name)
    except ClientError as error:
        if _error_code(error) != "ResourceAlreadyExistsException":
            raise
    if "RetentionInDays" in props:
        logs.put_retention_policy(logGroupName=name, retentionInDays=int(props["RetentionInDays"]))
    return ProvisionedResource(
        logical_id, "AWS::Logs::LogGroup", name, {"Arn": ctx.arn("logs", f"log-group:{name}:*")}
    )


def _log_stream(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    group = str(props["LogGroupName"])
    name = str(props.get("LogStreamName") or ctx.generated_name(logical_id, 512))
    try:
        ctx.clients("logs").create_log_stream(logGroupName=group, logStreamName=name)
    except ClientError as error:
        if _error_code(error) != "ResourceAlreadyExistsException":
            raise
    return ProvisionedResource(logical_id, "AWS::Logs::LogStream", name, parent_id=group)


def _role(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    iam = ctx.clients("iam")
    name = str(props.get("RoleName") or ctx.generated_name(logical_id, 64))
    trust = json.dumps(props["AssumeRolePolicyDocument"])
    try:
        role = iam.get_role(RoleName=name)["Role"]
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
    except ClientError as error:
        if _error_code(error) != "NoSuchEntity":
            raise
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=trust,
            **_pick(props, "Description"),
        )["Role"]
    for policy in props.get("Policies", []):
        iam.put_role_policy(
            RoleName=name,
            PolicyName=policy["PolicyName"],
            PolicyDocument=json.dumps(policy["PolicyDocument"]),
        )
    return ProvisionedResource(
        logical_id, "AWS::IAM::Role", name, {"Arn": str(role["Arn"]), "RoleId": str(role["RoleId"])}
    )


_STREAM_SETTINGS: Final = (
    "DeliveryStreamType",
    "DeliveryStreamEncryptionConfigurationInput",
    "ExtendedS3DestinationConfiguration",
)


def _delivery_stream(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    firehose = ctx.clients("firehose")
    name = str(props.get("DeliveryStreamName") or ctx.generated_name(logical_id, 64))
    try:
        description = firehose.describe_delivery_stream(DeliveryStreamName=name)
        arn = description["DeliveryStreamDescription"]["DeliveryStreamARN"]
    except ClientError as error:
        if _error_code(error) != "ResourceNotFoundException":
            raise
        arn = firehose.create_delivery_stream(
            DeliveryStreamName=name,
            **_pick(props, *_STREAM_SETTINGS),
        )["DeliveryStreamARN"]
    return ProvisionedResource(
        logical_id, "AWS::KinesisFirehose::DeliveryStream", name, {"Arn": str(arn)}
    )


def _glue_database(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    database = props["DatabaseInput"]
    try:
        ctx.clients("glue").create_database(CatalogId=props["CatalogId"], DatabaseInput=database)
    except ClientError as error:
        if _error_code(error) != "AlreadyExistsException":
            raise
    return ProvisionedResource(logical_id, "AWS::Glue::Database", str(database["Name"]))


def _glue_table(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    glue = ctx.clients("glue")
    table = {
        "CatalogId": props["CatalogId"],
        "DatabaseName": props["DatabaseName"],
        "TableInput": props["TableInput"],
    }
    try:
        glue.create_table(**table)
    except ClientError as error:
        if _error_code(error) != "AlreadyExistsException":
            raise
        glue.update_table(**table)  # columns follow the template; partitions are untouched
    return ProvisionedResource(
        logical_id,
        "AWS::Glue::Table",
        str(props["TableInput"]["Name"]),
        parent_id=str(props["DatabaseName"]),
    )


def _work_group(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    athena = ctx.clients("athena")
    name = str(props["Name"])
    configuration = props.get("WorkGroupConfiguration", {})
    if not _athena_work_group_exists(athena, name):
        athena.create_work_group(
            Name=name, Configuration=configuration, **_pick(props, "Description", "Tags")
        )
    if props.get("State", "ENABLED") != "ENABLED":
        athena.update_work_group(WorkGroup=name, State=props["State"])
    return ProvisionedResource(logical_id, "AWS::Athena::WorkGroup", name)


def _athena_work_group_exists(athena: Any, name: str) -> bool:
    try:
        # moto answers an unknown name with an empty WorkGroup instead of an error
        return athena.get_work_group(WorkGroup=name).get("WorkGroup") is not None
    except ClientError as error:
        if _error_code(error) != "InvalidRequestException":
            raise
        return False


_TABLE_SETTINGS: Final = ("AttributeDefinitions", "KeySchema", "BillingMode")


def _dynamodb_table(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    dynamodb = ctx.clients("dynamodb")
    name = str(props.get("TableName") or ctx.generated_name(logical_id, 255))
    try:
        arn = dynamodb.describe_table(TableName=name)["Table"]["TableArn"]
    except ClientError as error:
        if _error_code(error) != "ResourceNotFoundException":
            raise
        arn = dynamodb.create_table(
            TableName=name,
            **_pick(props, *_TABLE_SETTINGS),
        )["TableDescription"]["TableArn"]
        dynamodb.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        wanted = "ENABLED" if ttl["Enabled"] else "DISABLED"
        if current.get("TimeToLiveStatus") != wanted:
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr:
        dynamodb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification=pitr)
    return ProvisionedResource(logical_id, "AWS::DynamoDB::Table", name, {"Arn": str(arn)})


def _topic(ctx: _Context, logical_id: str, props: JsonDict) -> ProvisionedResource:
    name = str(props.get("TopicName") or ctx.generated_name(logical_id, 256))
    attributes = _pick(props, "DisplayName", "KmsMasterKeyId")
    arn = str(ctx.clients("sns").create_topic(Name=name, Attributes=attributes)["TopicArn"])
    return ProvisionedResource(
        logical_id, "AWS::SNS::Topic", arn, {"TopicArn": arn, "TopicName": name}
    )


_KINDS: Final[Mapping[str, _ResourceKind]] = {
    "AWS::Cognito::UserPool": _ResourceKind(
        _user_pool,
        lambda c, r: c("cognito-idp").describe_user_pool(UserPoolId=r.physical_id),
        frozenset({"UserPoolName", *_POOL_SETTINGS}),
    ),
    "AWS::Cognito::UserPoolClient": _ResourceKind(
        _user_pool_client,
        lambda c, r: c("cognito-idp").describe_user_pool_client(
            UserPoolId=r.parent_id, ClientId=r.physical_id
        ),
        frozenset({"UserPoolId", "ClientName", "GenerateSecret", *_CLIENT_SETTINGS}),
    ),
    "AWS::Cognito::UserPoolGroup": _ResourceKind(
        _user_pool_group,
        lambda c, r: c("cognito-idp").get_group(UserPoolId=r.parent_id, GroupName=r.physical_id),
        frozenset({"UserPoolId", "GroupName", "Description", "Precedence"}),
    ),
    "AWS::S3::Bucket": _ResourceKind(
        _bucket,
        lambda c, r: c("s3").head_bucket(Bucket=r.physical_id),
        frozenset(
            {
                "BucketName",
                "BucketEncryption",
                "PublicAccessBlockConfiguration",
                "OwnershipControls",
                "VersioningConfiguration",
                "LifecycleConfiguration",
            }
        ),
    ),
    "AWS::S3::BucketPolicy": _ResourceKind(
        _bucket_policy,
        _probe_bucket_policy,
        frozenset({"Bucket", "PolicyDocument"}),
    ),
    "AWS::Logs::LogGroup": _ResourceKind(
        _log_group,
        lambda c, r: _require(
            c("logs").describe_log_groups(logGroupNamePrefix=r.physical_id)["logGroups"],
            "logGroupName",
            r,
        ),
        frozenset({"LogGroupName", "RetentionInDays"}),
    ),
    "AWS::Logs::LogStream": _ResourceKind(
        _log_stream,
        lambda c, r: _require(
            c("logs").describe_log_streams(
                logGroupName=r.parent_id, logStreamNamePrefix=r.physical_id
            )["logStreams"],
            "logStreamName",
            r,
        ),
        frozenset({"LogGroupName", "LogStreamName"}),
    ),
    "AWS::IAM::Role": _ResourceKind(
        _role,
        lambda c, r: c("iam").get_role(RoleName=r.physical_id),
        frozenset({"RoleName", "AssumeRolePolicyDocument", "Description", "Policies"}),
    ),
    "AWS::KinesisFirehose::DeliveryStream": _ResourceKind(
        _delivery_stream,
        lambda c, r: c("firehose").describe_delivery_stream(DeliveryStreamName=r.physical_id),
        frozenset({"DeliveryStreamName", *_STREAM_SETTINGS}),
    ),
    "AWS::Glue::Database": _ResourceKind(
        _glue_database,
        lambda c, r: c("glue").get_database(Name=r.physical_id),
        frozenset({"CatalogId", "DatabaseInput"}),
    ),
    "AWS::Glue::Table": _ResourceKind(
        _glue_table,
        lambda c, r: c("glue").get_table(DatabaseName=r.parent_id, Name=r.physical_id),
        frozenset({"CatalogId", "DatabaseName", "TableInput"}),
    ),
    "AWS::Athena::WorkGroup": _ResourceKind(
        _work_group,
        lambda c, r: _athena_work_group_exists(c("athena"), r.physical_id) or _missing(r),
        # RecursiveDeleteOption only tells CloudFormation how to delete the workgroup.
        frozenset(
            {
                "Name",
                "Description",
                "State",
                "Tags",
                "WorkGroupConfiguration",
                "RecursiveDeleteOption",
            }
        ),
    ),
    "AWS::DynamoDB::Table": _ResourceKind(
        _dynamodb_table,
        lambda c, r: c("dynamodb").describe_table(TableName=r.physical_id),
        frozenset(
            {
                "TableName",
                *_TABLE_SETTINGS,
                "TimeToLiveSpecification",
                "PointInTimeRecoverySpecification",
            }
        ),
    ),
    "AWS::SNS::Topic": _ResourceKind(
        _topic,
        lambda c, r: c("sns").get_topic_attributes(TopicArn=r.physical_id),
        frozenset({"TopicName", "DisplayName", "KmsMasterKeyId"}),
    ),
}

SUPPORTED_RESOURCE_TYPES: Final = frozenset(_KINDS)

# Error codes that mean "it is not there" from the probes above.
_NOT_FOUND_CODES: Final = frozenset(
    {
        "404",
        "NoSuchBucket",
        "NoSuchBucketPolicy",
        "NotFound",
        "NoSuchEntity",
        "ResourceNotFoundException",
        "EntityNotFoundException",
        "NotFoundException",
    }
)


class _Missing(Exception):
    """Raised by a probe whose API answers "not found" with an empty result."""


def _missing(resource: ProvisionedResource) -> bool:
    raise _Missing(resource.logical_id)


def _require(items: Sequence[Mapping[str, Any]], key: str, resource: ProvisionedResource) -> bool:
    if not any(item.get(key) == resource.physical_id for item in items):
        raise _Missing(resource.logical_id)
    return True


# ---------------------------------------------------------------------------- public API


def _session(session: Any, region: str) -> Any:
    return session if session is not None else boto3.session.Session(region_name=region)


def provision_stack(
    template_path: Path | str = DEFAULT_TEMPLATE,
    stage: str = "local",
    region: str = "us-east-1",
    session: Any = None,
    *,
    endpoint_url: str | None = None,
    parameters: Mapping[str, str] | None = None,
    stack_name: str | None = None,
) -> ProvisionedStack:
    """Create (or find) every resource of the template and return them with the outputs.

    Clients come from ``session`` (a boto3 Session; a new one if None) and talk to
    ``endpoint_url``, or to ``AWS_ENDPOINT_URL`` when that is None, as boto3 does.
    """
    template = load_template(template_path)
    extra = set(template) - _TEMPLATE_SECTIONS
    if extra:
        raise ProvisioningError(f"unsupported template section(s) {sorted(extra)}")
    resources: Mapping[str, Any] = template["Resources"]
    for logical_id, definition in resources.items():
        resource_type = definition.get("Type")
        if resource_type not in _KINDS:
            raise ProvisioningError(
                f"{logical_id}: resource type {resource_type} is not supported by the local "
                "provisioner; teach local/provision.py to create it"
            )
        extra = set(definition) - _RESOURCE_KEYS
        if extra:
            raise ProvisioningError(f"{logical_id}: unsupported resource key(s) {sorted(extra)}")
        extra = set(definition.get("Properties", {})) - _KINDS[resource_type].properties
        if extra:
            raise ProvisioningError(
                f"{logical_id} ({resource_type}): property {sorted(extra)} is not applied by "
                "the local provisioner"
            )

    boto_session = _session(session, region)
    clients = _Clients(boto_session, region, endpoint_url)
    account_id = str(clients("sts").get_caller_identity()["Account"])
    partition = "aws-cn" if region.startswith("cn-") else "aws-us-gov" if "gov" in region else "aws"
    declared = template.get("Parameters", {})
    # ``stage`` feeds the Stage parameter; a template without one simply has no stage.
    overrides = {**({"Stage": stage} if "Stage" in declared else {}), **(parameters or {})}
    ctx = _Context(
        clients=clients,
        stack_name=stack_name or f"bedrock-metering-{stage}",
        region=region,
        account_id=account_id,
        partition=partition,
        parameters=_parameter_values(declared, overrides),
    )
    for logical_id in _creation_order(resources):
        definition = resources[logical_id]
        props = ctx.resolve(definition.get("Properties", {}))
        kind = _KINDS[definition["Type"]]
        ctx.resources[logical_id] = kind.create(ctx, logical_id, props)

    outputs: dict[str, str] = {}
    for name, spec in template.get("Outputs", {}).items():
        extra = set(spec) - _OUTPUT_KEYS
        if extra:
            raise ProvisioningError(f"output {name}: unsupported key(s) {sorted(extra)}")
        outputs[name] = str(ctx.resolve(spec["Value"]))
    return ProvisionedStack(ctx.stack_name, region, dict(ctx.resources), outputs)


def provision(
    template_path: Path | str = DEFAULT_TEMPLATE,
    stage: str = "local",
    region: str = "us-east-1",
    session: Any = None,
    *,
    endpoint_url: str | None = None,
) -> dict[str, str]:
    """Create (or find) the template's resources and return the stack outputs."""
    stack = provision_stack(template_path, stage, region, session, endpoint_url=endpoint_url)
    return dict(stack.outputs)


def resource_exists(
    resource: ProvisionedResource,
    session: Any = None,
    *,
    region: str = "us-east-1",
    endpoint_url: str | None = None,
) -> bool:
    """Whether the endpoint has the resource, asked with the service's own describe/get call."""
    kind = _KINDS.get(resource.resource_type)
    if kind is None:
        raise ProvisioningError(f"cannot check unsupported resource type {resource.resource_type}")
    clients = _Clients(_session(session, region), region, endpoint_url)
    try:
        kind.probe(clients, resource)
    except _Missing:
        return False
    except ClientError as error:
        if _error_code(error) in _NOT_FOUND_CODES:
            return False
        raise
    return True


def verify(
    stack: ProvisionedStack, session: Any = None, *, endpoint_url: str | None = None
) -> list[str]:
    """Logical ids of the stack's resources that the endpoint no longer has (empty if none)."""
    return [
        logical_id
        for logical_id, resource in stack.resources.items()
        if not resource_exists(resource, session, region=stack.region, endpoint_url=endpoint_url)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: provision on the endpoint and print (or write) the outputs as JSON."""
    parser = argparse.ArgumentParser(prog="python -m local.provision", description=__doc__)
    parser.add_argument("--template", default=str(DEFAULT_TEMPLATE))
    parser.add_argument("--stage", default="local")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--endpoint-url", default=None, help="default: $AWS_ENDPOINT_URL")
    parser.add_argument("--output", type=Path, default=None, help="write the outputs JSON here")
    args = parser.parse_args(argv)
    outputs = provision(args.template, args.stage, args.region, endpoint_url=args.endpoint_url)
    text = json.dumps(outputs, indent=2, sort_keys=True) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
