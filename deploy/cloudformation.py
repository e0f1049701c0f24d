"""One thin adapter over CloudFormation: stack state, change sets, outputs, deletion."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import ClientError, WaiterError

from deploy.errors import DeployError

Say = Callable[[str], None]

# States a stack cannot be changed from until it settles or someone steps in.
_BUSY_SUFFIX: Final = "_IN_PROGRESS"
_STUCK: Final = frozenset({"UPDATE_ROLLBACK_FAILED", "DELETE_FAILED", "ROLLBACK_FAILED"})
# A CREATE that failed and rolled back leaves an empty stack that can only be deleted.
_FAILED_CREATE: Final = frozenset({"ROLLBACK_COMPLETE", "CREATE_FAILED"})
_NO_CHANGES: Final = ("didn't contain changes", "No updates are to be performed")
WAIT: Final = {"Delay": 10, "MaxAttempts": 360}  # up to an hour (CloudFront-free stacks: minutes)


@dataclass(frozen=True)
class Template:
    """A template to deploy: inline (small) or at an S3 URL (the app's, up to 1 MB)."""

    body: str | None = None
    url: str | None = None

    def arguments(self) -> dict[str, str]:
        if self.url:
            return {"TemplateURL": self.url}
        if self.body is None:
            raise ValueError("a template needs a body or a URL")
        return {"TemplateBody": self.body}


class Stacks:
    """CloudFormation in one region. `client` is a boto3 cloudformation client."""

    def __init__(self, client: Any, *, say: Say = print, wait: Mapping[str, int] = WAIT) -> None:
        self._client = client
        self._say = say
        self._wait = dict(wait)

    def status(self, name: str) -> str | None:
        """The stack's status, or None if there is no such stack."""
        try:
            stacks = self._client.describe_stacks(StackName=name)["Stacks"]
        except ClientError as error:
            if "does not exist" in str(error):
                return None
            raise
        return str(stacks[0]["StackStatus"]) if stacks else None

    def outputs(self, name: str) -> dict[str, str]:
        """The stack's outputs, name -> value."""
        stack = self._client.describe_stacks(StackName=name)["Stacks"][0]
        return {str(o["OutputKey"]): str(o["OutputValue"]) for o in stack.get("Outputs", [])}

    def parameters(self, name: str) -> dict[str, str]:
        """The stack's current parameter values; none if there is no such stack."""
        try:
            stacks = self._client.describe_stacks(StackName=name)["Stacks"]
        except ClientError as error:
            if "does not exist" in str(error):
                return {}
            raise
        parameters = stacks[0].get("Parameters", []) if stacks else []
        return {str(p["ParameterKey"]): str(p["ParameterValue"]) for p in parameters}

    def deploy(
        self,
        name: str,
        template: Template,
        *,
        parameters: Mapping[str, str] | None = None,
        capabilities: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
    ) -> bool:
        """Create or update the stack through a change set; False if nothing changed."""
        status = self.status(name)
        if status is not None and status.endswith(_BUSY_SUFFIX) and status != "REVIEW_IN_PROGRESS":
            raise DeployError(f"stack {name} is busy ({status}); wait for it and run again.")
        if status in _STUCK:
            raise DeployError(
                f"stack {name} is {status}: fix it in the CloudFormation console (continue the "
                "rollback or delete it), then run again."
            )
        if status in _FAILED_CREATE:
            self._say(f"  {name}: removing the stack left by a failed first deployment")
            self._client.delete_stack(StackName=name)
            self._wait_for("stack_delete_complete", name)
            status = None
        change_type = "CREATE" if status in (None, "REVIEW_IN_PROGRESS") else "UPDATE"
        change_set = f"deploy-{time.strftime('%Y%m%d-%H%M%S')}"
        self._say(f"  {name}: {change_type.lower()} change set {change_set}")
        self._client.create_change_set(
            StackName=name,
            ChangeSetName=change_set,
            ChangeSetType=change_type,
            Parameters=[
                {"ParameterKey": k, "ParameterValue": v} for k, v in (parameters or {}).items()
            ],
            Capabilities=list(capabilities),
            Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()],
            **template.arguments(),
        )
        try:
            self._client.get_waiter("change_set_create_complete").wait(
                StackName=name,
                ChangeSetName=change_set,
                WaiterConfig={"Delay": 5, "MaxAttempts": 120},
            )
        except WaiterError:
            described = self._client.describe_change_set(StackName=name, ChangeSetName=change_set)
            reason = str(described.get("StatusReason", ""))
            if any(marker in reason for marker in _NO_CHANGES):
                self._client.delete_change_set(StackName=name, ChangeSetName=change_set)
                self._say(f"  {name}: no changes")
                return False
            raise DeployError(f"stack {name}: the change set failed: {reason}") from None
        self._client.execute_change_set(StackName=name, ChangeSetName=change_set)
        waiter = "stack_create_complete" if change_type == "CREATE" else "stack_update_complete"
        self._wait_for(waiter, name)
        self._say(f"  {name}: {'created' if change_type == 'CREATE' else 'updated'}")
        return True

    def protect(self, name: str, enabled: bool = True) -> None:
        """Turn termination protection on (or off, to delete the stack)."""
        self._client.update_termination_protection(
            StackName=name, EnableTerminationProtection=enabled
        )

    def resources(self, name: str) -> dict[str, str]:
        """Logical id -> physical id of the stack's resources."""
        found: dict[str, str] = {}
        for page in self._client.get_paginator("list_stack_resources").paginate(StackName=name):
            for item in page["StackResourceSummaries"]:
                found[str(item["LogicalResourceId"])] = str(item.get("PhysicalResourceId", ""))
        return found

    def delete(self, name: str) -> bool:
        """Delete the stack and wait; False if there was none."""
        if self.status(name) is None:
            self._say(f"  {name}: not there")
            return False
        self._say(f"  {name}: deleting")
        self._client.delete_stack(StackName=name)
        self._wait_for("stack_delete_complete", name)
        self._say(f"  {name}: deleted")
        return True

    def _wait_for(self, waiter: str, name: str) -> None:
        try:
            self._client.get_waiter(waiter).wait(StackName=name, WaiterConfig=self._wait)
        except WaiterError:
            raise DeployError(f"stack {name} failed: {self.failure_reasons(name)}") from None

    def failure_reasons(self, name: str) -> str:
        """The first resource failures of the stack's latest operation, for the operator."""
        try:
            events = self._client.describe_stack_events(StackName=name)["StackEvents"]
        except ClientError:
            return "see the CloudFormation console"
        failed = [
            f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
            for e in events
            if str(e.get("ResourceStatus", "")).endswith("_FAILED")
        ]
        return "; ".join(failed[:5]) or "see the CloudFormation console"
