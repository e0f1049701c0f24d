"""Which endpoint and credentials the stage's boto3 clients get: AWS, or the local stack."""

from __future__ import annotations

import pytest

from chalicelib.sessions import LocalEndpointSession, session_for
from chalicelib.settings import Settings

LOCAL = "http://127.0.0.1:4566"
BEDROCK = "http://127.0.0.1:4567"


@pytest.fixture(autouse=True)
def misleading_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Endpoints in the environment that the settings must win over."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://127.0.0.1:2")


def test_without_an_endpoint_the_session_is_plain_boto3_in_the_stages_region() -> None:
    session = session_for(Settings.from_env({"AWS_REGION": "eu-west-1"}))
    assert not isinstance(session, LocalEndpointSession)
    assert session.region_name == "eu-west-1"


def test_with_a_local_endpoint_every_client_goes_there_with_dummy_credentials() -> None:
    settings = Settings.from_env({"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": LOCAL})
    session = session_for(settings)
    for service in ("s3", "glue", "athena", "firehose", "dynamodb", "sns", "cognito-idp"):
        assert session.client(service).meta.endpoint_url == LOCAL, service
    assert session.client(service_name="glue").meta.endpoint_url == LOCAL  # awswrangler's call
    assert session.resource("s3").meta.client.meta.endpoint_url == LOCAL
    assert session.region_name == "eu-west-1"
    credentials = session.get_credentials()
    assert (credentials.access_key, credentials.secret_key) == ("testing", "testing")


def test_bedrock_runtime_goes_to_its_own_endpoint_when_one_is_set() -> None:
    both = Settings.from_env(
        {"AWS_ENDPOINT_URL": LOCAL, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": BEDROCK}
    )
    assert session_for(both).client("bedrock-runtime").meta.endpoint_url == BEDROCK
    assert session_for(both).client("bedrock").meta.endpoint_url == LOCAL
    only_aws = Settings.from_env({"AWS_ENDPOINT_URL": LOCAL})
    assert session_for(only_aws).client("bedrock-runtime").meta.endpoint_url == LOCAL


def test_an_endpoint_the_caller_names_wins() -> None:
    session = session_for(Settings.from_env({"AWS_ENDPOINT_URL": LOCAL}))
    assert session.client("s3", endpoint_url=BEDROCK).meta.endpoint_url == BEDROCK
