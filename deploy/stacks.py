"""analytics_infra/template.yaml split into the stage's data stack and infra stack.

The template stays one file (the local stack provisions it whole). Resources marked
`Metadata: {Stack: data}` hold what a stage must not lose (users, usage data, budgets) and go
to the data stack, which `make destroy` keeps; the others go to the infra stack. Where an
infra resource refers to a data resource, the reference becomes an `Fn::ImportValue` of an
output the data stack exports, so CloudFormation itself wires the two (and refuses to delete
the data stack while anything imports from it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from deploy import cfn
from deploy.errors import DeployError
from deploy.naming import Deployment

TEMPLATE: Final = Path(__file__).resolve().parent.parent / "analytics_infra" / "template.yaml"
STACK_KEY: Final = "Stack"  # resource Metadata key naming the stack a resource belongs to
DATA: Final = "data"
INFRA: Final = "infra"
ARTIFACTS_BUCKET: Final = "DeploymentArtifactsBucket"
ARTIFACTS_OUTPUT: Final = "ArtifactsBucketName"


@dataclass(frozen=True)
class InfraTemplates:
    """The two rendered templates and the outputs each exports (output name -> export)."""

    data: cfn.Template
    infra: cfn.Template
    exports: dict[str, str]


def stack_of(logical_id: str, resource: dict[str, Any]) -> str:
    """The stack a template resource is deployed in."""
    stack = (resource.get("Metadata") or {}).get(STACK_KEY, INFRA)
    if stack not in (DATA, INFRA):
        raise DeployError(f"{logical_id}: Metadata {STACK_KEY} must be '{DATA}' or '{INFRA}'.")
    return str(stack)


def split(deployment: Deployment, template: cfn.Template | None = None) -> InfraTemplates:
    """Render the data and infra templates of `deployment` from the analytics template."""
    source = copy.deepcopy(template if template is not None else cfn.load(TEMPLATE))
    unsupported = set(source) - {
        "AWSTemplateFormatVersion",
        "Description",
        "Parameters",
        "Resources",
        "Outputs",
    }
    if unsupported:
        raise DeployError(f"template sections {sorted(unsupported)} are not supported here")
    resources: dict[str, Any] = source["Resources"]
    data_ids = {i for i, r in resources.items() if stack_of(i, r) == DATA}
    parameters: dict[str, Any] = source.get("Parameters", {})

    for logical_id in sorted(data_ids):
        for name, _ in cfn.references(resources[logical_id]):
            if name in resources and name not in data_ids:
                raise DeployError(
                    f"{logical_id} is in the data stack but refers to {name}, which is not: "
                    f"mark {name} `{STACK_KEY}: {DATA}` too, or move the reference."
                )

    data_outputs: dict[str, Any] = {}
    infra_outputs: dict[str, Any] = {}
    for name, output in source.get("Outputs", {}).items():
        referenced = {n for n, _ in cfn.references(output["Value"]) if n in resources}
        (data_outputs if referenced <= data_ids else infra_outputs)[name] = output

    def data_reference(logical_id: str, attribute: str | None) -> Any:
        if logical_id not in data_ids:
            return None
        wanted = cfn.ref(logical_id) if attribute is None else cfn.get_att(logical_id, attribute)
        name = next((n for n, o in data_outputs.items() if o["Value"] == wanted), None)
        if name is None:
            name = logical_id + (attribute or "")
            data_outputs[name] = {
                "Description": f"{logical_id} {attribute or 'name'} (for the infra stack)",
                "Value": wanted,
            }
        return cfn.import_value(deployment.export(name))

    infra_resources = {
        logical_id: cfn.rewrite(resource, data_reference)
        for logical_id, resource in resources.items()
        if logical_id not in data_ids
    }
    infra_resources[ARTIFACTS_BUCKET] = _artifacts_bucket()
    infra_outputs = {
        name: {**output, "Value": cfn.rewrite(output["Value"], data_reference)}
        for name, output in infra_outputs.items()
    }

    exports: dict[str, str] = {}
    for outputs in (data_outputs, infra_outputs):
        for name, output in outputs.items():
            output["Export"] = {"Name": deployment.export(name)}
            exports[name] = deployment.export(name)
    infra_outputs[ARTIFACTS_OUTPUT] = {
        "Description": "Where `make deploy` uploads the Lambda bundle and the app template",
        "Value": cfn.ref(ARTIFACTS_BUCKET),
    }

    data = _template(
        f"Bedrock SaaS Metering {deployment.stage} - data: users, usage data, budgets. "
        "Kept by `make destroy` (termination protection) unless DELETE_DATA=1.",
        {i: _strip_marker(r) for i, r in resources.items() if i in data_ids},
        data_outputs,
        parameters,
        deployment,
    )
    infra = _template(
        f"Bedrock SaaS Metering {deployment.stage} - infrastructure: usage stream, Athena "
        "workgroup, alerts topic, deployment artifacts. Imports from the data stack.",
        {i: _strip_marker(r) for i, r in infra_resources.items()},
        infra_outputs,
        parameters,
        deployment,
    )
    return InfraTemplates(data, infra, exports)


def _strip_marker(resource: dict[str, Any]) -> dict[str, Any]:
    rendered = copy.deepcopy(resource)
    metadata = {k: v for k, v in rendered.pop("Metadata", {}).items() if k != STACK_KEY}
    if metadata:
        rendered["Metadata"] = metadata
    return rendered


def _template(
    description: str,
    resources: dict[str, Any],
    outputs: dict[str, Any],
    parameters: dict[str, Any],
    deployment: Deployment,
) -> cfn.Template:
    used = {name for name, _ in cfn.references([resources, outputs])}
    rendered: dict[str, Any] = {}
    for name, spec in parameters.items():
        if name not in used:
            continue
        rendered[name] = dict(spec)
        if name == "Stage":
            # Export and function names are rendered for this stage: no other value fits.
            rendered[name] = {
                "Type": "String",
                "Default": deployment.stage,
                "AllowedValues": [deployment.stage],
                "Description": spec.get("Description", "Stage"),
            }
    template: cfn.Template = {"AWSTemplateFormatVersion": "2010-09-09", "Description": description}
    if rendered:
        template["Parameters"] = rendered
    template["Resources"] = resources
    template["Outputs"] = outputs
    return template


def _artifacts_bucket() -> dict[str, Any]:
    """Private, encrypted; unversioned (the deploy tool empties it before deleting the stack).

    Objects are named by their content hash and never expire: CloudFormation may need an
    older bundle to roll an app update back.
    """
    return {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Delete",
        "UpdateReplacePolicy": "Delete",
        "Properties": {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        },
    }


# Retained data resources and the property that names each (what survives its stack).
_NAMED_BY: Final = {
    "AWS::S3::Bucket": "BucketName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Cognito::UserPool": "UserPoolName",
}


def retained_names(
    deployment: Deployment, account_id: str, template: cfn.Template | None = None
) -> dict[str, tuple[str, str]]:
    """Logical id -> (type, name) of the data resources that outlive their stack."""
    source = template if template is not None else cfn.load(TEMPLATE)
    resolver = cfn.Resolver(
        pseudo={
            "AWS::Partition": deployment.partition,
            "AWS::Region": deployment.region,
            "AWS::AccountId": account_id,
        },
        names={"Stage": deployment.stage},
    )
    found: dict[str, tuple[str, str]] = {}
    for logical_id, resource in source["Resources"].items():
        kind = resource["Type"]
        if stack_of(logical_id, resource) != DATA or kind not in _NAMED_BY:
            continue
        if not str(resource.get("DeletionPolicy", "Delete")).startswith("Retain"):
            continue
        found[logical_id] = (kind, str(resolver(resource["Properties"][_NAMED_BY[kind]])))
    return found
