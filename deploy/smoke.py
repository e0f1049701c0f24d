"""`make smoke`: the reference CLI flow against a deployment, as an operator runs it.

Creates a throwaway user of tenant `smoke-test`, logs in, chats, finds the call's usage event
in the bucket, reads GET /usage, and deletes the user again (also when a step fails). The
steps go through meterctl's command line; the bucket and the cleanup through boto3.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from deploy.errors import DeployError

ROOT: Final = Path(__file__).resolve().parent.parent
TENANT: Final = "smoke-test"
PROMPT: Final = "Please explain about AWS Lambda in one sentence."
EVENT_WAIT_S: Final = 240  # Firehose buffers up to 60 s before it writes to S3
POLL_S: Final = 5

Say = Callable[[str], None]


def _client(outputs: dict[str, str], service: str) -> Any:
    """A boto3 client for the deployment (the local stack's endpoint and dummy keys if local)."""
    import boto3

    arguments: dict[str, Any] = {"region_name": outputs.get("Region") or "us-east-1"}
    endpoint = outputs.get("AwsEndpointUrl")
    if endpoint:
        arguments.update(
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 (moto's dummy credentials)
        )
    return boto3.client(service, **arguments)


def smoke(outputs_file: Path, *, say: Say = print, event_wait_s: float = EVENT_WAIT_S) -> None:
    """Run the flow; DeployError names the step that failed. The user is always deleted."""
    if not outputs_file.exists():
        raise DeployError(
            f"No outputs at {outputs_file}: deploy the stage first (`make deploy`), or start "
            "the local stack (`make run`) for STAGE=local."
        )
    outputs = json.loads(outputs_file.read_text(encoding="utf-8"))
    for key in ("UserPoolId", "UserPoolClientId", "ApiGatewayUrl", "AnalyticsBucketName"):
        if not outputs.get(key):
            raise DeployError(f"{outputs_file} has no {key}: was the app stack deployed?")
    username = f"smoke-{uuid.uuid4().hex[:10]}"
    password = f"Sm0ke-{secrets.token_urlsafe(12)}!"
    say(f"Smoke test of {outputs['ApiGatewayUrl']} as {username} (tenant {TENANT})")

    def meterctl(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(  # noqa: S603 (our interpreter, our CLI)
            [sys.executable, "-m", "meterctl", "--outputs", str(outputs_file), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise DeployError(
                f"meterctl {args[0]} failed: {(result.stderr or result.stdout).strip()}"
            )
        return result

    meterctl("user", "create", "--tenant", TENANT, "--username", username, "--password", password)
    say(f"  1. created user {username}")
    try:
        token = meterctl("login", "--username", username, "--password", password).stdout.strip()
        say("  2. logged in (ID token)")
        started = datetime.now(UTC)
        chat = meterctl("chat", PROMPT, "--token", token, "--max-tokens", "64")
        event_id = _event_id(chat.stderr)
        say(f"  3. chat answered: {chat.stdout.strip()[:80]!r} (usage event {event_id})")
        where = _find_event(outputs, event_id, started, event_wait_s)
        say(f"  4. usage event in s3://{outputs['AnalyticsBucketName']}/{where}")
        usage = json.loads(meterctl("usage", "--json", "--token", token).stdout)
        if usage.get("tenant_id") != TENANT or "totals" not in usage:
            raise DeployError(f"GET /usage answered an unexpected body: {usage}")
        say(f"  5. GET /usage answered for {TENANT} ({usage['from']} to {usage['to']})")
    finally:
        _client(outputs, "cognito-idp").admin_delete_user(
            UserPoolId=outputs["UserPoolId"], Username=username
        )
        say(f"  cleaned up: user {username} deleted")
    say("Smoke test passed.")


def _event_id(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.startswith("usage event:"):
            return line.split(":", 1)[1].strip()
    raise DeployError(f"the chat named no usage event (meterctl said: {stderr.strip()})")


def _find_event(outputs: dict[str, str], event_id: str, started: datetime, wait_s: float) -> str:
    """The key of the object holding the event (raw/ from Firehose, or fallback/)."""
    s3 = _client(outputs, "s3")
    bucket = outputs["AnalyticsBucketName"]
    deadline = time.monotonic() + wait_s
    while True:
        hours = {started + timedelta(hours=h) for h in (-1, 0, 1)}
        for hour in sorted(hours):
            for prefix in (f"raw/{hour:%Y/%m/%d/%H}/", f"fallback/{hour:%Y/%m/%d/%H}/"):
                for page in s3.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=prefix
                ):
                    for item in page.get("Contents", []):
                        body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                        if event_id.encode() in body:
                            return str(item["Key"])
        if time.monotonic() >= deadline:
            raise DeployError(
                f"usage event {event_id} not in s3://{bucket}/raw/ or fallback/ after "
                f"{wait_s:.0f} s: check the Firehose stream's delivery errors"
            )
        time.sleep(POLL_S)
