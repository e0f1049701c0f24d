"""Functional ring: the Chalice test client against moto (in-process), no network."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from chalice.test import Client
from moto import mock_aws

from chalicelib import wiring
from chalicelib.bedrock import BedrockModel
from chalicelib.identity import IdTokenVerifier
from chalicelib.settings import Settings
from local.running import moto_server
from tests.support.tokens import CLIENT_ID, ISSUER, POOL_ID, REGION, TokenFactory

BUCKET = "bedrock-metering-test"
STREAM = "bedrock-metering-usage-test"

TOKENS = TokenFactory()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Dummy credentials and an in-process moto for every AWS call."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield


@pytest.fixture
def local_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A moto server on loopback, and no AWS endpoint, credentials or profile in the
    environment: what meterctl and the benchmarks must reach through Settings alone."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no credentials from anywhere else
    wiring.reset()
    with moto_server() as url:
        yield url
    wiring.reset()


def create_usage_pipeline() -> None:
    """The bucket and Direct PUT stream the chat path writes to."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    boto3.client("firehose", region_name=REGION).create_delivery_stream(
        DeliveryStreamName=STREAM,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": f"arn:aws:s3:::{BUCKET}",
            "Prefix": "raw/",
        },
    )


def make_settings(**overrides: str) -> Settings:
    env = {
        "STAGE": "test",
        "AWS_REGION": REGION,
        "TOKEN_VERIFICATION": "app",
        "USER_POOL_ID": POOL_ID,
        "USER_POOL_CLIENT_ID": CLIENT_ID,
        "FIREHOSE_STREAM_NAME": STREAM,
        "ANALYTICS_BUCKET": BUCKET,
        "MAX_PROMPT_CHARS": "2000",
        "DEFAULT_MAX_TOKENS": "64",
        "MAX_TOKENS_LIMIT": "256",
        "BUDGETS_ENABLED": "false",
        "CURATION_TABLE": "bedrock-metering-test-curation",
        # moto's in-process mock intercepts boto3's clients only, not the lean ones.
        "REQUEST_PATH_AWS_CLIENT": "botocore",
    }
    env.update(overrides)
    return Settings.from_env(env)


@dataclass
class Bedrock:
    """A real bedrock-runtime client whose answers are scripted with botocore's Stubber."""

    client: Any
    stubber: Stubber
    calls: list[dict[str, Any]] = field(default_factory=list)

    def reply(
        self,
        text: str = "Hello from the model.",
        input_tokens: int = 11,
        output_tokens: int = 5,
        **usage: int,
    ) -> None:
        self.stubber.add_response(
            "converse",
            {
                "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                "stopReason": "end_turn",
                "usage": {
                    "inputTokens": input_tokens,
                    "outputTokens": output_tokens,
                    "totalTokens": input_tokens + output_tokens + sum(usage.values()),
                    **usage,
                },
                "metrics": {"latencyMs": 42},
            },
        )

    def fail(self, code: str, status: int, message: str = "internal detail from AWS") -> None:
        self.stubber.add_client_error(
            "converse", service_error_code=code, service_message=message, http_status_code=status
        )


@pytest.fixture
def bedrock(aws: None) -> Iterator[Bedrock]:
    client = boto3.client("bedrock-runtime", region_name=REGION)
    stubber = Stubber(client)
    stub = Bedrock(client, stubber)
    original = client.converse

    def recording_converse(**kwargs: Any) -> Any:
        stub.calls.append(kwargs)
        return original(**kwargs)

    client.converse = recording_converse
    with stubber:
        yield stub


@pytest.fixture
def app_env(aws: None, bedrock: Bedrock) -> Iterator[Settings]:
    """The app wired to moto, the stubbed model and the test token issuer."""
    create_usage_pipeline()
    settings = make_settings()
    wiring.reset()
    wiring.override(
        settings=settings,
        model=BedrockModel(bedrock.client),
        verifier=IdTokenVerifier(issuer=ISSUER, audience=CLIENT_ID, keys=TOKENS.keys),
    )
    yield settings
    wiring.reset()


@pytest.fixture
def client(app_env: Settings) -> Iterator[Client]:
    from app import app

    with Client(app) as test_client:
        yield test_client


def auth(tenant_id: str | None = "tenant-a", **claims: Any) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {TOKENS.id_token(tenant_id, **claims)}",
        "Content-Type": "application/json",
    }


def stored_events(prefix: str = "") -> list[dict[str, Any]]:
    """Every usage event in the bucket (raw Firehose objects and the fallback location)."""
    s3 = boto3.client("s3", region_name=REGION)
    events = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            events.extend(json.loads(line) for line in body.splitlines() if line.strip())
    return events
