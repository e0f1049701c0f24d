"""The operator's AWS session: found and accepted before anything is deployed or deleted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from chalicelib.aws_errors import error_code
from deploy.errors import DeployError

NO_CREDENTIALS: Final = (
    "No AWS credentials found, so nothing was changed. Give the deploy tooling credentials for "
    "the target account in one of the usual ways: AWS_PROFILE=<profile> (set up with `aws "
    "configure` or `aws configure sso`, then `aws sso login`), or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary credentials)."
)


@dataclass(frozen=True)
class Account:
    """A session whose credentials AWS accepted, and whose they are."""

    session: Any
    account_id: str
    caller_arn: str

    def client(self, service: str) -> Any:
        return self.session.client(service)


def connect(region: str, session: Any = None) -> Account:
    """A session for `region` with working credentials; DeployError says what is missing."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

    try:
        session = session or boto3.session.Session(region_name=region)
    except ProfileNotFound as error:
        raise DeployError(
            f"{error}: set AWS_PROFILE to a profile in ~/.aws/config, or unset it. "
            "Nothing was changed."
        ) from None
    try:
        credentials = session.get_credentials()
    except BotoCoreError as error:
        raise DeployError(f"Cannot load AWS credentials ({error}). Nothing was changed.") from None
    if credentials is None:
        raise DeployError(NO_CREDENTIALS)
    try:
        identity = session.client("sts", region_name=region).get_caller_identity()
    except ClientError as error:
        raise DeployError(
            f"AWS rejected the credentials ({error_code(error)}): they are wrong or expired. "
            "Renew them (`aws sso login`, new access keys) and run again. Nothing was changed."
        ) from None
    except BotoCoreError as error:
        raise DeployError(
            f"Cannot use the AWS credentials ({error}). Nothing was changed."
        ) from None
    return Account(session, str(identity["Account"]), str(identity["Arn"]))
