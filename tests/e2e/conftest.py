"""End-to-end ring: the real local stack (moto server, SmolLM2 behind the Bedrock stand-in,
`chalice local`), driven over HTTP and with the AWS CLI, as a user would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from local.stack import LocalStack, StackConfig

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Sup3r-secret!"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningStack:
    """A started local stack and helpers to use it like an operator would."""

    stack: LocalStack
    outputs: dict[str, str]
    outputs_file: Path

    @property
    def env(self) -> dict[str, str]:
        """Environment for AWS CLI / boto3 calls against the local endpoint."""
        return {**os.environ, **self.stack.config.base_env(), "AWS_PAGER": ""}

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            region_name=self.outputs["Region"],
            endpoint_url=self.outputs["AwsEndpointUrl"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def meterctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "meterctl", "--outputs", str(self.outputs_file), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=check,
            timeout=300,
        )

    def create_user(self, tenant_id: str, username: str, *, admin: bool = False) -> str:
        """Create a tenant user and return a fresh ID token."""
        extra = ["--admin"] if admin else []
        self.meterctl(
            "user",
            "create",
            "--tenant",
            tenant_id,
            "--username",
            username,
            "--password",
            PASSWORD,
            *extra,
        )
        return self.meterctl("login", "--username", username, "--password", PASSWORD).stdout.strip()

    def request(
        self, method: str, path: str, token: str | None, body: Any = None
    ) -> tuple[int, Any, dict[str, str]]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        request = urllib.request.Request(
            self.outputs["ApiGatewayUrl"].rstrip("/") + path,
            data=data,
            method=method,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None, dict(exc.headers)

    def raw_events(self) -> list[dict[str, Any]]:
        """Every usage event Firehose (and the fallback) wrote to the analytics bucket."""
        s3 = self.client("s3")
        bucket = self.outputs["AnalyticsBucketName"]
        events = []
        for prefix in ("raw/", "fallback/"):
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                    events.extend(json.loads(line) for line in body.splitlines() if line.strip())
        return events

    def model_calls(self) -> list[dict[str, Any]]:
        """What the Bedrock stand-in served (its own ledger of converse calls)."""
        with urllib.request.urlopen(
            self.outputs["BedrockEndpointUrl"] + "/_calls", timeout=10
        ) as response:
            return list(json.loads(response.read())["calls"])

    def set_faults(self, **faults: int) -> None:
        request = urllib.request.Request(
            self.outputs["BedrockEndpointUrl"] + "/_faults",
            data=json.dumps(faults).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10):
            pass


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """One local stack for the e2e session, on free ports so it never meets a running `make run`."""
    state_dir = tmp_path_factory.mktemp("stack")
    config = StackConfig(
        aws_port=free_port(),
        bedrock_port=free_port(),
        api_port=free_port(),
        engine=os.environ.get("METER_E2E_ENGINE", "llama"),
        job_interval_s=float(os.environ.get("METER_E2E_JOB_INTERVAL_S", "2")),
        state_dir=state_dir,
    )
    stack = LocalStack(config)
    try:
        outputs = stack.start()
        yield RunningStack(stack, outputs, state_dir / "outputs.json")
    finally:
        stack.stop()
