"""`make destroy`: the app and infra stacks go; the data stays unless DELETE_DATA=1.

Kept: the data stack (termination protection on) with the user pool and its app client and
admins group, the analytics bucket (raw events, curated usage, Athena results), the Glue
database and usage table, and the plans table. `make deploy` of the same stage reuses them.
With DELETE_DATA=1 the data stack is deleted too, then the resources it retains: the bucket
is emptied of every object version and delete marker, then deleted, as are the pool and table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws_errors import error_code
from deploy import buckets, credentials, stacks
from deploy.cloudformation import Stacks
from deploy.deployer import find_user_pool
from deploy.errors import DeployError
from deploy.naming import Deployment

Say = Callable[[str], None]
Ask = Callable[[str], str]


def confirm(
    deployment: Deployment,
    given: str | None,
    *,
    delete_data: bool,
    interactive: bool,
    ask: Ask = input,
) -> None:
    """Return only if the operator confirmed this stage; DeployError (nothing done) otherwise."""
    what = (
        "the app, the infrastructure AND THE DATA (users, usage history, budgets)"
        if delete_data
        else "the app and the infrastructure (the data stack is kept)"
    )
    if given:
        if given != deployment.stage:
            raise DeployError(
                f"CONFIRM={given} does not match STAGE={deployment.stage}; nothing was deleted."
            )
        return
    if not interactive:
        raise DeployError(
            f"`make destroy` deletes {what} of stage {deployment.stage} in "
            f"{deployment.region}. Run it in a terminal to confirm, or pass "
            f"CONFIRM={deployment.stage}. Nothing was deleted."
        )
    answer = ask(
        f"This deletes {what} of stage {deployment.stage} in {deployment.region}.\n"
        f"Type the stage name ({deployment.stage}) to go on: "
    )
    if answer.strip() != deployment.stage:
        raise DeployError("Not confirmed; nothing was deleted.")


def destroy(
    deployment: Deployment,
    *,
    delete_data: bool,
    say: Say = print,
    session: Any = None,
) -> None:
    """Delete the stage's stacks (after `confirm`)."""
    account = credentials.connect(deployment.region, session)
    cloudformation = Stacks(account.client("cloudformation"), say=say)
    s3 = account.client("s3")
    say(f"Destroying stage {deployment.stage} in {deployment.region} ({account.account_id})")
    cloudformation.delete(deployment.app_stack)
    if cloudformation.status(deployment.infra_stack):
        artifacts = cloudformation.outputs(deployment.infra_stack).get(stacks.ARTIFACTS_OUTPUT)
        if artifacts:
            buckets.empty(s3, artifacts, say)
        cloudformation.delete(deployment.infra_stack)
    else:
        say(f"  {deployment.infra_stack}: not there")

    retained = stacks.retained_names(deployment, account.account_id)
    if not delete_data:
        if cloudformation.status(deployment.data_stack):
            say(
                f"Kept {deployment.data_stack} (termination protection on): "
                + ", ".join(name for _, name in retained.values())
                + ", the app client, the admins group and the Glue catalog. `make deploy` "
                "reuses them; DELETE_DATA=1 deletes them."
            )
        return

    if cloudformation.status(deployment.data_stack):
        cloudformation.protect(deployment.data_stack, enabled=False)
        cloudformation.delete(deployment.data_stack)
    say("  deleting the retained data:")
    for kind, name in retained.values():
        _delete_retained(account, kind, name, say)
    say(f"Stage {deployment.stage} is gone, data included.")


def _delete_retained(account: credentials.Account, kind: str, name: str, say: Say) -> None:
    if kind == "AWS::S3::Bucket":
        if not buckets.delete(account.client("s3"), name, say):
            say(f"    {name}: not there")
        return
    if kind == "AWS::DynamoDB::Table":
        try:
            account.client("dynamodb").delete_table(TableName=name)
            say(f"    {name}: deleted")
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
            say(f"    {name}: not there")
        return
    cognito = account.client("cognito-idp")
    pool_id = find_user_pool(cognito, name)
    if pool_id is None:
        say(f"    {name}: not there")
        return
    cognito.delete_user_pool(UserPoolId=pool_id)
    say(f"    {name} ({pool_id}): deleted")
