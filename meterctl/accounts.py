"""Tenant users in the Cognito user pool: create, log in."""

from __future__ import annotations

import argparse
import os

from botocore.exceptions import ClientError, EndpointConnectionError

from meterctl.target import CliError, Target

ADMIN_GROUP = "admins"
TOKEN_ENV = "METER_ID_TOKEN"  # noqa: S105 (a variable name, not a secret)


def add_credential_arguments(parser: argparse.ArgumentParser) -> None:
    """--token, or --username and --password to log in first."""
    parser.add_argument("--token", help=f"ID token (or set ${TOKEN_ENV})")
    parser.add_argument("--username", help="log in as this user first")
    parser.add_argument("--password", help="password for --username")


def token_for(args: argparse.Namespace, target: Target) -> str:
    """An ID token from --token, $METER_ID_TOKEN, or a login with --username/--password."""
    token = args.token or os.environ.get(TOKEN_ENV)
    if token:
        return str(token)
    if args.username and args.password:
        return login(target, username=args.username, password=args.password)
    raise CliError(f"Give --token, set {TOKEN_ENV}, or give --username and --password.")


def _unreachable(target: Target) -> CliError:
    where = target.endpoint_url or "AWS"
    hint = " Is the local stack running (`make run`)?" if target.endpoint_url else ""
    return CliError(f"Cannot reach Cognito at {where}.{hint}")


def create_user(
    target: Target,
    *,
    tenant_id: str,
    username: str,
    password: str,
    email: str | None = None,
    admin: bool = False,
) -> None:
    """Create a user bound to a tenant, with a permanent password (the reference CLI steps)."""
    cognito = target.client("cognito-idp")
    pool_id = target.get("UserPoolId")
    attributes = [{"Name": "custom:tenant_id", "Value": tenant_id}]
    if email:
        attributes.append({"Name": "email", "Value": email})
    try:
        cognito.admin_create_user(
            UserPoolId=pool_id,
            Username=username,
            UserAttributes=attributes,
            TemporaryPassword=password,
            MessageAction="SUPPRESS",
        )
        cognito.admin_set_user_password(
            UserPoolId=pool_id, Username=username, Password=password, Permanent=True
        )
        if admin:
            cognito.admin_add_user_to_group(
                UserPoolId=pool_id, Username=username, GroupName=ADMIN_GROUP
            )
    except EndpointConnectionError:
        raise _unreachable(target) from None
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code == "UsernameExistsException":
            raise CliError(f"User {username!r} already exists.") from None
        if code == "InvalidPasswordException":
            raise CliError(
                "Password rejected by the pool's policy: at least 8 characters with upper and "
                "lower case letters, a number and a symbol."
            ) from None
        raise CliError(f"Cognito refused: {code}.") from None


def login(target: Target, *, username: str, password: str) -> str:
    """USER_PASSWORD_AUTH against the app client; returns the ID token."""
    cognito = target.client("cognito-idp")
    try:
        result = cognito.initiate_auth(
            ClientId=target.get("UserPoolClientId"),
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": password},
        )
    except EndpointConnectionError:
        raise _unreachable(target) from None
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code == "NotAuthorizedException":
            raise CliError("Incorrect username or password.") from None
        if code == "UserNotFoundException":
            raise CliError(f"No such user: {username!r}.") from None
        raise CliError(f"Cognito refused the login: {code}.") from None
    if "AuthenticationResult" not in result:
        challenge = result.get("ChallengeName", "unknown")
        raise CliError(f"Login needs a further step ({challenge}); set a permanent password first.")
    return str(result["AuthenticationResult"]["IdToken"])
