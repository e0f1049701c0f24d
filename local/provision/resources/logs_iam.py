"""CloudWatch Logs groups and streams, and IAM roles (what Firehose logs to and acts as)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from botocore.exceptions import ClientError

from chalicelib.aws_errors import error_code
from local.provision.intrinsics import StackContext
from local.provision.model import JsonDict, ProvisionedResource
from local.provision.resources.base import ResourceKind, pick, require


def _log_group(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    logs = ctx.clients("logs")
    name = str(props.get("LogGroupName") or ctx.generated_name(logical_id, 512))
    try:
        logs.create_log_group(logGroupName=name)
    except ClientError as error:
        if error_code(error) != "ResourceAlreadyExistsException":
            raise
    if "RetentionInDays" in props:
        logs.put_retention_policy(logGroupName=name, retentionInDays=int(props["RetentionInDays"]))
    return ProvisionedResource(
        logical_id, "AWS::Logs::LogGroup", name, {"Arn": ctx.arn("logs", f"log-group:{name}:*")}
    )


def _log_stream(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    group = str(props["LogGroupName"])
    name = str(props.get("LogStreamName") or ctx.generated_name(logical_id, 512))
    try:
        ctx.clients("logs").create_log_stream(logGroupName=group, logStreamName=name)
    except ClientError as error:
        if error_code(error) != "ResourceAlreadyExistsException":
            raise
    return ProvisionedResource(logical_id, "AWS::Logs::LogStream", name, parent_id=group)


def _role(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    iam = ctx.clients("iam")
    name = str(props.get("RoleName") or ctx.generated_name(logical_id, 64))
    trust = json.dumps(props["AssumeRolePolicyDocument"])
    try:
        role = iam.get_role(RoleName=name)["Role"]
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
    except ClientError as error:
        if error_code(error) != "NoSuchEntity":
            raise
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=trust,
            **pick(props, "Description"),
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


KINDS: Final[Mapping[str, ResourceKind]] = {
    "AWS::Logs::LogGroup": ResourceKind(
        _log_group,
        lambda c, r: require(
            c("logs").describe_log_groups(logGroupNamePrefix=r.physical_id)["logGroups"],
            "logGroupName",
            r,
        ),
        frozenset({"LogGroupName", "RetentionInDays"}),
    ),
    "AWS::Logs::LogStream": ResourceKind(
        _log_stream,
        lambda c, r: require(
            c("logs").describe_log_streams(
                logGroupName=r.parent_id, logStreamNamePrefix=r.physical_id
            )["logStreams"],
            "logStreamName",
            r,
        ),
        frozenset({"LogGroupName", "LogStreamName"}),
    ),
    "AWS::IAM::Role": ResourceKind(
        _role,
        lambda c, r: c("iam").get_role(RoleName=r.physical_id),
        frozenset({"RoleName", "AssumeRolePolicyDocument", "Description", "Policies"}),
    ),
}
