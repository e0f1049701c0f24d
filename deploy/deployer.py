"""`make deploy`: check, package, then the data, infra and app stacks, in that order.

Nothing changes on AWS before the credentials work, the layer is resolved, the package is
rendered and the read-only preflight has found no name another deployment holds.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from botocore.exceptions import ClientError

from chalicelib.aws_errors import error_code
from deploy import credentials, layers, package, stacks
from deploy.cloudformation import Stacks, Template
from deploy.credentials import Account
from deploy.errors import DeployError
from deploy.layers import Layer, Source
from deploy.naming import RESOURCE_PREFIX, Deployment

Say = Callable[[str], None]

OUTPUTS_FILE: Final = "outputs.json"
SEED_OUTPUTS: Final = ("UserPoolId", "UserPoolClientId", "ApiGatewayUrl")
DEFAULT_GLUE_DATABASE: Final = "bedrock_metering_db"
DEFAULT_WORKGROUP: Final = "bedrock-metering-workgroup"
# Lambda keeps this much of the account's concurrency unreserved.
MIN_UNRESERVED_CONCURRENCY: Final = 100
_NOT_FOUND: Final = frozenset(
    {"EntityNotFoundException", "ResourceNotFoundException", "404", "NoSuchBucket", "NotFound"}
)
DATA_CAPABILITIES: Final = ()
INFRA_CAPABILITIES: Final = ("CAPABILITY_IAM",)  # the Firehose role (no fixed name)
APP_CAPABILITIES: Final = ("CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND")  # roles, SAM transform


@dataclass(frozen=True)
class Options:
    """What the operator may choose (make variables)."""

    layer_source: Source = "auto"
    layer_arn: str | None = None
    glue_database: str | None = None
    athena_workgroup: str | None = None
    reserved_concurrency: bool = True
    infra_only: bool = False  # data and infra stacks only (for `chalice deploy`)


def deploy(
    deployment: Deployment,
    options: Options,
    *,
    say: Say = print,
    session: Any = None,
    directory: Path | None = None,
) -> dict[str, str]:
    """Deploy the stage; the outputs (also written to build/<stage>/outputs.json)."""
    account = credentials.connect(deployment.region, session)
    say(
        f"Deploying stage {deployment.stage} to {deployment.region}, account "
        f"{account.account_id} as {account.caller_arn}"
    )
    layer = choose_layer(deployment, options, account.session)
    built = package.build(
        deployment,
        layer,
        directory,
        reserved_concurrency=options.reserved_concurrency,
        say=say,
    )
    cloudformation = Stacks(account.client("cloudformation"), say=say)
    parameters = stack_parameters(cloudformation, deployment, options)
    say("Checking the account (read only) ...")
    preflight(account, cloudformation, deployment, parameters, built.manifest)
    outputs = run(
        account, cloudformation, built, parameters, infra_only=options.infra_only, say=say
    )
    path = built.directory / OUTPUTS_FILE
    path.write_text(json.dumps(outputs, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    say(f"Deployed. Outputs in {path} (meterctl --outputs {path} ...):")
    for name in SEED_OUTPUTS:
        if name in outputs:
            say(f"  {name} = {outputs[name]}")
    return outputs


def choose_layer(deployment: Deployment, options: Options, session: Any) -> Layer:
    """The pandas layer: given, from SSM (default when deploying), or from the table."""
    if options.layer_arn:
        return layers.given(options.layer_arn, deployment.region)
    source: Source = "ssm" if options.layer_source == "auto" else options.layer_source
    return layers.resolve(deployment.region, source, session)


def stack_parameters(
    cloudformation: Stacks, deployment: Deployment, options: Options
) -> dict[str, dict[str, str]]:
    """Parameters of the data and infra stacks: as given, else as deployed, else defaults.

    Both names are kept across deployments: renaming the Glue database would replace the
    table (and lose its partitions), and the app stack imports both, so a different name for
    a deployed stage is refused.
    """
    deployed = cloudformation.parameters(deployment.data_stack)
    current = deployed.get("GlueDatabaseName")
    database = options.glue_database or current or DEFAULT_GLUE_DATABASE
    if current and database != current:
        raise DeployError(
            f"Stage {deployment.stage} keeps its usage table in Glue database {current}; "
            f"GLUE_DATABASE={database} would replace it. Leave GLUE_DATABASE unset."
        )
    infra_deployed = cloudformation.parameters(deployment.infra_stack)
    deployed_workgroup = infra_deployed.get("AthenaWorkGroupName")
    workgroup = options.athena_workgroup or deployed_workgroup or DEFAULT_WORKGROUP
    if deployed_workgroup and workgroup != deployed_workgroup:
        raise DeployError(
            f"Stage {deployment.stage} runs its queries in Athena workgroup "
            f"{deployed_workgroup}, which the app stack imports; ATHENA_WORKGROUP={workgroup} "
            "cannot replace it in place. Leave ATHENA_WORKGROUP unset (or destroy the stage "
            "first; the data is kept)."
        )
    return {
        deployment.data_stack: {"Stage": deployment.stage, "GlueDatabaseName": database},
        deployment.infra_stack: {"Stage": deployment.stage, "AthenaWorkGroupName": workgroup},
        deployment.app_stack: {},
    }


def preflight(
    account: Account,
    cloudformation: Stacks,
    deployment: Deployment,
    parameters: Mapping[str, Mapping[str, str]],
    manifest: Mapping[str, Any],
) -> None:
    """Refuse, before any change, what would fail half-way: names another deployment holds."""
    problems: list[str] = []
    legacy = f"{RESOURCE_PREFIX}-{deployment.stage}"
    if cloudformation.status(legacy):
        problems.append(
            f"stack {legacy} (from the manual path in analytics_infra/README.md) holds this "
            "stage's names; delete it first or deploy another stage"
        )
    if cloudformation.status(deployment.data_stack) is None:
        database = parameters[deployment.data_stack]["GlueDatabaseName"]
        if _exists(lambda: account.client("glue").get_database(Name=database)):
            problems.append(
                f"Glue database {database} already exists (another stage?): pass "
                f"GLUE_DATABASE=bedrock_metering_{deployment.stage.replace('-', '_')}"
            )
        for logical_id, (kind, name) in stacks.retained_names(
            deployment, account.account_id
        ).items():
            if _retained_exists(account, kind, name):
                problems.append(
                    f"{kind} {name} ({logical_id}) is left from an earlier deployment whose "
                    f"data stack is gone: delete it (`make destroy STAGE={deployment.stage} "
                    f"REGION={deployment.region} DELETE_DATA=1` deletes it by name) or keep "
                    "it and deploy another stage"
                )
    if cloudformation.status(deployment.infra_stack) is None:
        workgroup = parameters[deployment.infra_stack]["AthenaWorkGroupName"]
        if _workgroup_exists(account.client("athena"), workgroup):
            problems.append(
                f"Athena workgroup {workgroup} already exists (another stage?): pass "
                f"ATHENA_WORKGROUP=bedrock-metering-{deployment.stage}"
            )
    if cloudformation.status(deployment.app_stack) is None:
        problems.extend(_app_problems(account, manifest))
    if problems:
        raise DeployError(
            "Nothing was changed, because:\n" + "\n".join(f"- {problem}" for problem in problems)
        )


def _app_problems(account: Account, manifest: Mapping[str, Any]) -> list[str]:
    problems = []
    lambda_client = account.client("lambda")
    functions = manifest["functions"]
    for entry in functions.values():
        name = entry["function_name"]
        if _exists(functools.partial(lambda_client.get_function, FunctionName=name)):
            problems.append(f"Lambda function {name} already exists (`chalice deploy`?)")
    reserved = sum(entry.get("reserved_concurrency") or 0 for entry in functions.values())
    problem = concurrency_problem(lambda_client, reserved)
    return [*problems, problem] if problem else problems


def concurrency_problem(lambda_client: Any, reserved: int) -> str | None:
    """Why the account cannot reserve `reserved` executions for the jobs, if it cannot."""
    if not reserved:
        return None
    limits = lambda_client.get_account_settings()["AccountLimit"]
    unreserved = int(limits["UnreservedConcurrentExecutions"])
    if unreserved - reserved >= MIN_UNRESERVED_CONCURRENCY:
        return None
    return (
        f"the account's Lambda concurrency ({limits['ConcurrentExecutions']}, {unreserved} "
        f"unreserved) cannot reserve {reserved} for the jobs and keep "
        f"{MIN_UNRESERVED_CONCURRENCY} unreserved: ask for a higher 'Concurrent executions' "
        "quota (Service Quotas, AWS Lambda), or deploy with RESERVED_CONCURRENCY=0 (the jobs "
        "may then overlap themselves)"
    )


def _exists(call: Callable[[], Any]) -> bool:
    """Whether a describe/get call finds its resource; DeployError if it cannot tell."""
    try:
        call()
    except ClientError as error:
        if error_code(error) in _NOT_FOUND:
            return False
        raise DeployError(
            f"The preflight check could not read ({error}); nothing was changed. The deploying "
            "identity needs read access to CloudFormation, Glue, Athena, S3, DynamoDB, Cognito "
            "and Lambda."
        ) from None
    return True


def _workgroup_exists(athena: Any, name: str) -> bool:
    """Athena answers an unknown workgroup with InvalidRequestException (moto: an empty one)."""
    try:
        return athena.get_work_group(WorkGroup=name).get("WorkGroup") is not None
    except ClientError as error:
        if error_code(error) == "InvalidRequestException":
            return False
        raise


def _retained_exists(account: Account, kind: str, name: str) -> bool:
    if kind == "AWS::S3::Bucket":
        try:
            account.client("s3").head_bucket(Bucket=name)
        except ClientError as error:
            code = error_code(error)
            if code in ("404", "NoSuchBucket", "NotFound"):
                return False
            if code in ("403", "AccessDenied"):
                raise DeployError(f"bucket {name} belongs to another account") from None
            raise
        return True
    if kind == "AWS::DynamoDB::Table":
        return _exists(lambda: account.client("dynamodb").describe_table(TableName=name))
    return find_user_pool(account.client("cognito-idp"), name) is not None


def find_user_pool(cognito: Any, name: str) -> str | None:
    """The id of the user pool with this name, if there is one."""
    for page in cognito.get_paginator("list_user_pools").paginate(MaxResults=60):
        for pool in page.get("UserPools", []):
            if pool["Name"] == name:
                return str(pool["Id"])
    return None


def run(
    account: Account,
    cloudformation: Stacks,
    built: package.Package,
    parameters: Mapping[str, Mapping[str, str]],
    *,
    infra_only: bool = False,
    say: Say = print,
) -> dict[str, str]:
    """Deploy the rendered stacks in order and gather the outputs meterctl reads."""
    deployment = built.deployment
    templates = built.templates
    tags = {"project": "bedrock-saas-metering", "stage": deployment.stage}

    def inline(stack: str) -> Template:
        return Template(body=templates[stack].read_text(encoding="utf-8"))

    cloudformation.deploy(
        deployment.data_stack,
        inline(deployment.data_stack),
        parameters=parameters[deployment.data_stack],
        capabilities=DATA_CAPABILITIES,
        tags=tags,
    )
    cloudformation.protect(deployment.data_stack)
    cloudformation.deploy(
        deployment.infra_stack,
        inline(deployment.infra_stack),
        parameters=parameters[deployment.infra_stack],
        capabilities=INFRA_CAPABILITIES,
        tags=tags,
    )
    outputs = {
        **cloudformation.outputs(deployment.data_stack),
        **cloudformation.outputs(deployment.infra_stack),
    }
    if not infra_only:
        bucket = outputs[stacks.ARTIFACTS_OUTPUT]
        s3 = account.client("s3")
        bundle_key = upload(s3, bucket, "app", built.bundle.read_bytes(), suffix=".zip", say=say)
        app = json.loads(templates[deployment.app_stack].read_text(encoding="utf-8"))
        for resource in app["Resources"].values():
            if resource["Type"] == "AWS::Serverless::Function":
                resource["Properties"]["CodeUri"] = f"s3://{bucket}/{bundle_key}"
        body = json.dumps(app, separators=(",", ":")).encode()
        template_key = upload(s3, bucket, "templates", body, suffix=".json", say=say)
        url = f"https://{bucket}.s3.{deployment.region}.{_url_suffix(deployment)}/{template_key}"
        cloudformation.deploy(
            deployment.app_stack,
            Template(url=url),
            capabilities=APP_CAPABILITIES,
            tags=tags,
        )
        outputs.update(cloudformation.outputs(deployment.app_stack))
    outputs.pop(stacks.ARTIFACTS_OUTPUT, None)
    outputs.update({"Stage": deployment.stage, "Region": deployment.region})
    return outputs


def upload(s3: Any, bucket: str, key_prefix: str, body: bytes, *, suffix: str, say: Say) -> str:
    """Put `body` under its content hash (once); the key."""
    key = f"{key_prefix}/{hashlib.sha256(body).hexdigest()}{suffix}"
    try:
        s3.head_object(Bucket=bucket, Key=key)
        say(f"  s3://{bucket}/{key} already uploaded")
    except ClientError:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        say(f"  uploaded s3://{bucket}/{key} ({len(body):,} bytes)")
    return key


def _url_suffix(deployment: Deployment) -> str:
    return "amazonaws.com.cn" if deployment.partition == "aws-cn" else "amazonaws.com"
