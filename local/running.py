"""Private local stacks and moto servers on free ports, for tests and benchmarks to drive."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib.sessions import LocalEndpointSession
from local.stack import HOST, ROOT, LocalStack, StackConfig

PASSWORD = "Sup3r-secret!"  # noqa: S105 (the password of the users these helpers create)


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on now (the OS picks it), for a server about to start."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server in this process on a free port, with no resources yet; yields its URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        # moto's state is per process, not per server: forget what an earlier one created.
        reset = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(reset, timeout=10):
            pass
        yield url
    finally:
        server.stop()


@contextmanager
def serialized_moto_server() -> Iterator[str]:
    """Like `moto_server`, but moto's app behind the local endpoint's DynamoDB serializer
    (local/aws_endpoint.py): conditional writes are atomic, as on AWS, so concurrent callers
    can be tested against it. In this process, on a free port; yields its URL."""
    import threading

    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    from local.aws_endpoint import make_app

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args: Any) -> None:
            pass

    server = make_server(HOST, 0, make_app(), threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://{HOST}:{server.server_port}"

    def reset() -> None:
        # moto's state is per process, not per server: start and leave it empty.
        request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    try:
        reset()
        yield url
        reset()
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@contextmanager
def running_stack(
    state_dir: Path, *, engine: str = "llama", job_interval_s: float = 30.0
) -> Iterator[RunningStack]:
    """The whole local stack on free ports (never meeting a `make run`), stopped on exit."""
    config = StackConfig(
        aws_port=free_port(),
        bedrock_port=free_port(),
        api_port=free_port(),
        engine=engine,
        job_interval_s=job_interval_s,
        state_dir=state_dir,
    )
    stack = LocalStack(config)
    try:
        outputs = stack.start()
        yield RunningStack(stack, outputs, state_dir / "outputs.json")
    finally:
        stack.stop()


@dataclass
class RunningStack:
    """A started local stack and helpers to use it like an operator would."""

    stack: LocalStack
    outputs: dict[str, str]
    outputs_file: Path

    @property
    def env(self) -> dict[str, str]:
        """Environment for AWS CLI processes against the local endpoint."""
        return {**os.environ, **self.stack.config.base_env(), "AWS_PAGER": ""}

    def client(self, service: str) -> Any:
        """A boto3 client on the local endpoint (dummy credentials)."""
        session = LocalEndpointSession(
            endpoint_url=self.outputs["AwsEndpointUrl"], region_name=self.outputs["Region"]
        )
        return session.client(service)

    def meterctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`python -m meterctl --outputs <this stack's outputs> ...`, output captured."""
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
        self,
        method: str,
        path: str,
        token: str | None,
        body: Any = None,
        extra_headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """One API call; returns the status, the JSON body and the headers."""
        headers = {"Content-Type": "application/json", **(extra_headers or {})}
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
        events: list[dict[str, Any]] = []
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
        """Make the Bedrock stand-in fail its next calls (its `/_faults` endpoint)."""
        request = urllib.request.Request(
            self.outputs["BedrockEndpointUrl"] + "/_faults",
            data=json.dumps(faults).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10):
            pass
