"""The Glue catalog (database, tables) and the Athena workgroup that queries it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from botocore.exceptions import ClientError

from chalicelib.aws_errors import error_code
from local.provision.intrinsics import StackContext
from local.provision.model import JsonDict, ProvisionedResource
from local.provision.resources.base import ResourceKind, missing, pick


def _glue_database(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    database = props["DatabaseInput"]
    try:
        ctx.clients("glue").create_database(CatalogId=props["CatalogId"], DatabaseInput=database)
    except ClientError as error:
        if error_code(error) != "AlreadyExistsException":
            raise
    return ProvisionedResource(logical_id, "AWS::Glue::Database", str(database["Name"]))


def _glue_table(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    glue = ctx.clients("glue")
    table = {
        "CatalogId": props["CatalogId"],
        "DatabaseName": props["DatabaseName"],
        "TableInput": props["TableInput"],
    }
    try:
        glue.create_table(**table)
    except ClientError as error:
        if error_code(error) != "AlreadyExistsException":
            raise
        glue.update_table(**table)  # columns follow the template; partitions are untouched
    return ProvisionedResource(
        logical_id,
        "AWS::Glue::Table",
        str(props["TableInput"]["Name"]),
        parent_id=str(props["DatabaseName"]),
    )


def _work_group(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    athena = ctx.clients("athena")
    name = str(props["Name"])
    configuration = props.get("WorkGroupConfiguration", {})
    if not _athena_work_group_exists(athena, name):
        athena.create_work_group(
            Name=name, Configuration=configuration, **pick(props, "Description", "Tags")
        )
    if props.get("State", "ENABLED") != "ENABLED":
        athena.update_work_group(WorkGroup=name, State=props["State"])
    return ProvisionedResource(logical_id, "AWS::Athena::WorkGroup", name)


def _athena_work_group_exists(athena: Any, name: str) -> bool:
    try:
        # moto answers an unknown name with an empty WorkGroup instead of an error
        return athena.get_work_group(WorkGroup=name).get("WorkGroup") is not None
    except ClientError as error:
        if error_code(error) != "InvalidRequestException":
            raise
        return False


KINDS: Final[Mapping[str, ResourceKind]] = {
    "AWS::Glue::Database": ResourceKind(
        _glue_database,
        lambda c, r: c("glue").get_database(Name=r.physical_id),
        frozenset({"CatalogId", "DatabaseInput"}),
    ),
    "AWS::Glue::Table": ResourceKind(
        _glue_table,
        lambda c, r: c("glue").get_table(DatabaseName=r.parent_id, Name=r.physical_id),
        frozenset({"CatalogId", "DatabaseName", "TableInput"}),
    ),
    "AWS::Athena::WorkGroup": ResourceKind(
        _work_group,
        lambda c, r: _athena_work_group_exists(c("athena"), r.physical_id) or missing(r),
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
}
