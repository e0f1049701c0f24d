"""Cognito: the user pool, its app clients and its groups."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from botocore.exceptions import ClientError

from chalicelib.aws_errors import error_code
from local.provision.intrinsics import StackContext
from local.provision.model import JsonDict, ProvisionedResource
from local.provision.resources.base import ResourceKind, pick

_POOL_SETTINGS: Final = (
    "Policies",
    "Schema",
    "AdminCreateUserConfig",
    "UsernameConfiguration",
    "AutoVerifiedAttributes",
    "AccountRecoverySetting",
    "MfaConfiguration",
)


def _user_pool(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    cognito = ctx.clients("cognito-idp")
    name = props.get("UserPoolName") or ctx.generated_name(logical_id, 128)
    pool_id = None
    for page in cognito.get_paginator("list_user_pools").paginate(MaxResults=60):
        pool_id = next((p["Id"] for p in page["UserPools"] if p["Name"] == name), pool_id)
    if pool_id is None:
        settings = pick(props, *_POOL_SETTINGS)
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


def _user_pool_client(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    cognito = ctx.clients("cognito-idp")
    pool_id = str(props["UserPoolId"])
    name = props.get("ClientName") or ctx.generated_name(logical_id, 128)
    settings = pick(props, *_CLIENT_SETTINGS)
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


def _user_pool_group(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    cognito = ctx.clients("cognito-idp")
    pool_id = str(props["UserPoolId"])
    group = {"GroupName": props.get("GroupName") or ctx.generated_name(logical_id, 128)}
    group.update(pick(props, "Description", "Precedence"))
    try:
        cognito.create_group(UserPoolId=pool_id, **group)
    except ClientError as error:
        if error_code(error) != "GroupExistsException":
            raise
        cognito.update_group(UserPoolId=pool_id, **group)
    return ProvisionedResource(
        logical_id, "AWS::Cognito::UserPoolGroup", str(group["GroupName"]), parent_id=pool_id
    )


KINDS: Final[Mapping[str, ResourceKind]] = {
    "AWS::Cognito::UserPool": ResourceKind(
        _user_pool,
        lambda c, r: c("cognito-idp").describe_user_pool(UserPoolId=r.physical_id),
        frozenset({"UserPoolName", *_POOL_SETTINGS}),
    ),
    "AWS::Cognito::UserPoolClient": ResourceKind(
        _user_pool_client,
        lambda c, r: c("cognito-idp").describe_user_pool_client(
            UserPoolId=r.parent_id, ClientId=r.physical_id
        ),
        frozenset({"UserPoolId", "ClientName", "GenerateSecret", *_CLIENT_SETTINGS}),
    ),
    "AWS::Cognito::UserPoolGroup": ResourceKind(
        _user_pool_group,
        lambda c, r: c("cognito-idp").get_group(UserPoolId=r.parent_id, GroupName=r.physical_id),
        frozenset({"UserPoolId", "GroupName", "Description", "Precedence"}),
    ),
}
