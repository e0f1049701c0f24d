"""Provision a template on an endpoint: create every resource in order, check they exist."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import boto3
from botocore.exceptions import ClientError

from chalicelib.aws_errors import error_code
from local.provision.clients import ServiceClients
from local.provision.intrinsics import StackContext, creation_order, parameter_values
from local.provision.model import ProvisionedResource, ProvisionedStack, ProvisioningError
from local.provision.resources import KINDS
from local.provision.resources.base import NOT_FOUND_CODES, MissingResourceError
from local.provision.template import DEFAULT_TEMPLATE, load_template

_TEMPLATE_SECTIONS: Final = frozenset(
    {"AWSTemplateFormatVersion", "Description", "Metadata", "Parameters", "Resources", "Outputs"}
)
_RESOURCE_KEYS: Final = frozenset(
    {"Type", "Properties", "DependsOn", "DeletionPolicy", "UpdateReplacePolicy", "Metadata"}
)
_OUTPUT_KEYS: Final = frozenset({"Description", "Value"})


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
        if resource_type not in KINDS:
            raise ProvisioningError(
                f"{logical_id}: resource type {resource_type} is not supported by the local "
                "provisioner; teach local/provision/resources/ to create it"
            )
        extra = set(definition) - _RESOURCE_KEYS
        if extra:
            raise ProvisioningError(f"{logical_id}: unsupported resource key(s) {sorted(extra)}")
        extra = set(definition.get("Properties", {})) - KINDS[resource_type].properties
        if extra:
            raise ProvisioningError(
                f"{logical_id} ({resource_type}): property {sorted(extra)} is not applied by "
                "the local provisioner"
            )

    boto_session = _session(session, region)
    clients = ServiceClients(boto_session, region, endpoint_url)
    account_id = str(clients("sts").get_caller_identity()["Account"])
    partition = "aws-cn" if region.startswith("cn-") else "aws-us-gov" if "gov" in region else "aws"
    declared = template.get("Parameters", {})
    # ``stage`` feeds the Stage parameter; a template without one simply has no stage.
    overrides = {**({"Stage": stage} if "Stage" in declared else {}), **(parameters or {})}
    ctx = StackContext(
        clients=clients,
        stack_name=stack_name or f"bedrock-metering-{stage}",
        region=region,
        account_id=account_id,
        partition=partition,
        parameters=parameter_values(declared, overrides),
    )
    for logical_id in creation_order(resources):
        definition = resources[logical_id]
        props = ctx.resolve(definition.get("Properties", {}))
        kind = KINDS[definition["Type"]]
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
    kind = KINDS.get(resource.resource_type)
    if kind is None:
        raise ProvisioningError(f"cannot check unsupported resource type {resource.resource_type}")
    clients = ServiceClients(_session(session, region), region, endpoint_url)
    try:
        kind.probe(clients, resource)
    except MissingResourceError:
        return False
    except ClientError as error:
        if error_code(error) in NOT_FOUND_CODES:
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
    parser = argparse.ArgumentParser(
        prog="python -m local.provision",
        description=(
            "Build analytics_infra/template.yaml's resources on a local AWS endpoint by "
            "interpreting it."
        ),
    )
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
