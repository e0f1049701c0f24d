"""DynamoDB: tables with their time-to-live and point-in-time recovery."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from botocore.exceptions import ClientError

from chalicelib.aws_errors import error_code
from local.provision.intrinsics import StackContext
from local.provision.model import JsonDict, ProvisionedResource
from local.provision.resources.base import ResourceKind, pick

_TABLE_SETTINGS: Final = ("AttributeDefinitions", "KeySchema", "BillingMode")


def _dynamodb_table(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    dynamodb = ctx.clients("dynamodb")
    name = str(props.get("TableName") or ctx.generated_name(logical_id, 255))
    try:
        arn = dynamodb.describe_table(TableName=name)["Table"]["TableArn"]
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        arn = dynamodb.create_table(
            TableName=name,
            **pick(props, *_TABLE_SETTINGS),
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


KINDS: Final[Mapping[str, ResourceKind]] = {
    "AWS::DynamoDB::Table": ResourceKind(
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
}
