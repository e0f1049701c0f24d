"""POST /bedrock/chat through the Chalice test client, Firehose and S3 on moto."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from chalice.test import Client

from chalicelib import wiring
from chalicelib.chat import RETRYABLE_MODEL_CODES
from chalicelib.firehose import FirehoseWriter
from chalicelib.recorder import UsageRecorder
from chalicelib.settings import DEFAULT_MODEL_ID, Settings
from tests.functional.conftest import BUCKET, STREAM, TOKENS, Bedrock, auth, stored_events


def chat(client: Client, body: Any, headers: dict[str, str] | None = None) -> Any:
    payload = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.http.post(
        "/bedrock/chat", headers=auth() if headers is None else headers, body=payload
    )


def test_chat_returns_model_text_and_records_one_event(client: Client, bedrock: Bedrock) -> None:
    bedrock.reply("AWS Lambda runs code without servers.", input_tokens=12, output_tokens=9)

    response = chat(client, {"prompt": "Please explain about AWS Lambda."})

    assert response.status_code == 200
    assert response.json_body == {"response": "AWS Lambda runs code without servers."}
    events = stored_events("raw/")
    assert len(events) == 1
    event = events[0]
    assert response.headers["X-Request-Id"] == event["event_id"]
    assert event["tenant_id"] == "tenant-a"
    assert event["user_id"] == "user-tenant-a"
    assert event["model_id"] == DEFAULT_MODEL_ID
    assert (event["input_tokens"], event["output_tokens"], event["total_tokens"]) == (12, 9, 21)
    assert event["status"] == "ok"
    assert event["error_code"] is None
    assert (
        Decimal(event["cost_usd"])
        == Decimal(12) * Decimal("0.25") / 10**6 + Decimal(9) * Decimal("1.25") / 10**6
    )
    assert event["price_version"]
    assert event["stage"] == "test"
    assert event["timestamp"].endswith("Z")


def test_model_is_called_with_the_prompt_and_bounded_max_tokens(
    client: Client, bedrock: Bedrock
) -> None:
    bedrock.reply()
    chat(client, {"prompt": "hi", "max_tokens": 100})
    (call,) = bedrock.calls
    assert call["modelId"] == DEFAULT_MODEL_ID
    assert call["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]
    assert call["inferenceConfig"] == {"maxTokens": 100}


def test_a_conversation_is_sent_as_converse_messages_with_the_system_text(
    client: Client, bedrock: Bedrock
) -> None:
    bedrock.reply("Green.", input_tokens=30, output_tokens=2)
    messages = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one."},
    ]

    response = chat(client, {"messages": messages, "system": "One word only.", "max_tokens": 8})

    assert response.status_code == 200
    assert response.json_body == {"response": "Green."}
    (call,) = bedrock.calls
    assert call["messages"] == [
        {"role": "user", "content": [{"text": "Name a colour."}]},
        {"role": "assistant", "content": [{"text": "Blue."}]},
        {"role": "user", "content": [{"text": "Another one."}]},
    ]
    assert call["system"] == [{"text": "One word only."}]
    assert call["inferenceConfig"] == {"maxTokens": 8}
    (event,) = stored_events()
    assert (event["status"], event["input_tokens"], event["output_tokens"]) == ("ok", 30, 2)


def test_a_prompt_without_a_system_text_sends_none(client: Client, bedrock: Bedrock) -> None:
    bedrock.reply()
    chat(client, {"prompt": "hi"})
    assert "system" not in bedrock.calls[0]


def test_without_budgets_naming_the_stages_model_is_the_same_as_leaving_it_out(
    client: Client, bedrock: Bedrock
) -> None:
    bedrock.reply()
    assert chat(client, {"prompt": "hi", "model": DEFAULT_MODEL_ID}).status_code == 200
    assert bedrock.calls[0]["modelId"] == DEFAULT_MODEL_ID


@pytest.mark.parametrize(
    "model",
    [
        "amazon.nova-micro-v1:0",  # priced: budgets off offer only the stage's model
        f"us.{DEFAULT_MODEL_ID}",  # the same model through a profile the stage does not call
    ],
)
def test_without_budgets_another_model_is_403_naming_the_one_offered(
    client: Client, bedrock: Bedrock, model: str
) -> None:
    response = chat(client, {"prompt": "hi", "model": model})

    assert response.status_code == 403
    assert f"offers only its default model, {DEFAULT_MODEL_ID}" in response.json_body["Message"]
    assert bedrock.calls == []
    (event,) = stored_events()
    assert (event["status"], event["error_code"]) == ("rejected", "ModelNotAllowed")
    assert event["model_id"] == model
    assert (event["cost_usd"], event["total_tokens"]) == ("0", 0)
    assert response.headers["X-Request-Id"] == event["event_id"]


@pytest.mark.parametrize(
    "model", ["acme.mystery-model-v1:0", "cohere.command-r-v1:0"], ids=["unknown", "unpriced"]
)
def test_without_budgets_an_unknown_or_unpriced_model_is_400_and_recorded(
    client: Client, bedrock: Bedrock, model: str
) -> None:
    response = chat(client, {"prompt": "hi", "model": model})

    assert response.status_code == 400
    assert f"Unknown model '{model}'" in response.json_body["Message"]
    assert bedrock.calls == []
    (event,) = stored_events()
    assert (event["status"], event["error_code"], event["model_id"]) == (
        "rejected",
        "ModelNotPriced",
        model,
    )


def test_cache_tokens_reported_by_the_model_are_recorded(client: Client, bedrock: Bedrock) -> None:
    bedrock.reply(
        input_tokens=3, output_tokens=4, cacheReadInputTokens=1000, cacheWriteInputTokens=200
    )
    chat(client, {"prompt": "hi"})
    (event,) = stored_events()
    assert (event["cache_read_input_tokens"], event["cache_write_input_tokens"]) == (1000, 200)
    assert event["total_tokens"] == 1207


def test_n_calls_make_n_events_with_distinct_ids(client: Client, bedrock: Bedrock) -> None:
    for _ in range(5):
        bedrock.reply()
    ids = {chat(client, {"prompt": "hi"}).headers["X-Request-Id"] for _ in range(5)}
    events = stored_events()
    assert len(events) == 5
    assert {e["event_id"] for e in events} == ids


def test_tenant_in_body_or_headers_is_ignored(client: Client, bedrock: Bedrock) -> None:
    bedrock.reply()
    headers = {**auth("tenant-a"), "X-Tenant-Id": "tenant-b", "custom:tenant_id": "tenant-b"}
    response = chat(
        client, {"prompt": "hi", "tenant_id": "tenant-b", "custom:tenant_id": "tenant-b"}, headers
    )
    assert response.status_code == 200
    assert [e["tenant_id"] for e in stored_events()] == ["tenant-a"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'["hi"]', "JSON object"),
        (b"{}", "'prompt' or 'messages' is required"),
        (b'{"prompt": ""}', "must not be empty"),
        (b'{"prompt": 7}', "must be a string"),
        (json.dumps({"prompt": "x" * 2001}), "too long"),
        (b'{"prompt": "hi", "max_tokens": 0}', "max_tokens"),
        (b'{"prompt": "hi", "max_tokens": 257}', "max_tokens"),
        (b'{"prompt": "hi", "max_tokens": "many"}', "max_tokens"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"prompt": "\\ud800"}', "lone surrogate"),
        (b'{"prompt": "hi", "prompt": "again"}', "more than once"),
        (b'{"prompt": "hi", "max_tokens": NaN}', "NaN"),
        (b"\xff\xfe{\x00}\x00", "UTF-8"),
    ],
)
def test_bad_input_is_400_without_model_call_or_event(
    client: Client, bedrock: Bedrock, body: bytes | str, message: str
) -> None:
    response = chat(client, body)
    assert response.status_code == 400
    assert message in response.json_body["Message"]
    assert bedrock.calls == []
    assert stored_events() == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {"Authorization": "Bearer garbage", "Content-Type": "application/json"},
        {"Authorization": "Bearer a.b.c", "Content-Type": "application/json"},
        {"Authorization": f"Bearer {TOKENS.unsigned_token()}", "Content-Type": "application/json"},
        {
            "Authorization": f"Bearer {TOKENS.id_token(signer=TOKENS.other_private_key)}",
            "Content-Type": "application/json",
        },
        auth(exp=1_600_000_000, iat=1_599_990_000),
        auth(aud="someone-else"),
        auth(iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other"),
        auth(token_use="access", aud=None, client_id="testclientid1234567890"),
    ],
    ids=[
        "missing",
        "malformed",
        "junk-parts",
        "alg-none",
        "bad-signature",
        "expired",
        "audience",
        "issuer",
        "access-token",
    ],
)
def test_bad_tokens_are_401_without_model_call_or_event(
    client: Client, bedrock: Bedrock, headers: dict[str, str]
) -> None:
    response = chat(client, {"prompt": "hi"}, headers)
    assert response.status_code == 401
    assert response.json_body["Code"] == "UnauthorizedError"
    assert bedrock.calls == []
    assert stored_events() == []


def test_valid_token_without_tenant_is_403(client: Client, bedrock: Bedrock) -> None:
    response = chat(client, {"prompt": "hi"}, auth(tenant_id=None))
    assert response.status_code == 403
    assert bedrock.calls == []
    assert stored_events() == []


def test_bedrock_throttling_is_429_with_retry_after_and_an_error_event(
    client: Client, bedrock: Bedrock
) -> None:
    bedrock.fail("ThrottlingException", 429, "Rate exceeded for account 123456789012")
    response = chat(client, {"prompt": "hi"})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "123456789012" not in response.body.decode()
    (event,) = stored_events()
    assert event["status"] == "error"
    assert event["error_code"] == "ThrottlingException"
    assert event["total_tokens"] == 0
    assert event["cost_usd"] == "0"
    assert response.headers["X-Request-Id"] == event["event_id"]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDeniedException", 403),
        ("ResourceNotFoundException", 404),
        ("ValidationException", 400),
        ("ModelErrorException", 424),
        ("ModelTimeoutException", 408),
        ("ServiceUnavailableException", 503),
        ("InternalServerException", 500),
    ],
)
def test_model_errors_are_502_with_a_generic_message(
    client: Client, bedrock: Bedrock, code: str, status: int
) -> None:
    attempts = 2 if code in RETRYABLE_MODEL_CODES else 1
    for _ in range(attempts):
        bedrock.fail(code, status, "You don't have access to arn:aws:bedrock:us-east-1::secret")
    response = chat(client, {"prompt": "hi"})
    assert len(bedrock.calls) == attempts
    assert response.status_code == 502
    body = response.body.decode()
    assert "arn:aws" not in body
    assert code not in body
    assert "Traceback" not in body
    (event,) = stored_events()
    assert (event["status"], event["error_code"]) == ("error", code)


def test_a_transient_model_failure_is_retried_once_within_the_deadline(
    client: Client, bedrock: Bedrock
) -> None:
    bedrock.fail("ServiceUnavailableException", 503)
    bedrock.reply("second time lucky")
    response = chat(client, {"prompt": "hi"})
    assert response.status_code == 200
    assert response.json_body == {"response": "second time lucky"}
    assert len(bedrock.calls) == 2
    (event,) = stored_events()
    assert event["status"] == "ok"


class FlakyFirehose:
    """A Firehose client that fails some records or whole calls, then behaves like the real one."""

    def __init__(self, real: Any, failures: list[Any]) -> None:
        self.real = real
        self.failures = failures
        self.sent: list[int] = []

    def put_record_batch(self, **kwargs: Any) -> Any:
        self.sent.append(len(kwargs["Records"]))
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return {
                "FailedPutCount": len(kwargs["Records"]),
                "RequestResponses": [
                    {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "x"}
                ]
                * len(kwargs["Records"]),
            }
        return self.real.put_record_batch(**kwargs)


def use_firehose(settings: Settings, firehose: Any, s3: Any = None) -> None:
    import boto3

    wiring.override(
        recorder=UsageRecorder(
            FirehoseWriter(STREAM, client=firehose, max_attempts=3, sleep=lambda _: None),
            bucket=BUCKET,
            fallback_prefix=settings.fallback_prefix,
            s3_client=s3 or boto3.client("s3"),
        )
    )


def test_firehose_recovering_after_a_failed_put_still_gives_one_event(
    client: Client, bedrock: Bedrock, app_env: Settings
) -> None:
    import boto3

    flaky = FlakyFirehose(
        boto3.client("firehose"), ["partial", EndpointConnectionError(endpoint_url="x")]
    )
    use_firehose(app_env, flaky)
    bedrock.reply()
    response = chat(client, {"prompt": "hi"})
    assert response.status_code == 200
    assert flaky.sent == [1, 1, 1]
    assert len(stored_events("raw/")) == 1
    assert stored_events("fallback/") == []


def test_firehose_down_uses_the_fallback_and_still_answers(
    client: Client, bedrock: Bedrock, app_env: Settings
) -> None:
    import boto3

    down = ClientError(
        {"Error": {"Code": "ServiceUnavailableException", "Message": "x"}}, "PutRecordBatch"
    )
    use_firehose(app_env, FlakyFirehose(boto3.client("firehose"), [down] * 3))
    bedrock.reply(input_tokens=4, output_tokens=2)
    response = chat(client, {"prompt": "hi"})
    assert response.status_code == 200
    assert stored_events("raw/") == []
    (event,) = stored_events("fallback/")
    assert event["event_id"] == response.headers["X-Request-Id"]
    assert (event["input_tokens"], event["output_tokens"]) == (4, 2)


class BrokenS3:
    def put_object(self, **kwargs: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "InternalError", "Message": "We encountered an internal error"}},
            "PutObject",
        )


def test_no_200_without_a_durable_event(
    client: Client, bedrock: Bedrock, app_env: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    import boto3

    down = ClientError(
        {"Error": {"Code": "ServiceUnavailableException", "Message": "x"}}, "PutRecordBatch"
    )
    use_firehose(app_env, FlakyFirehose(boto3.client("firehose"), [down] * 3), s3=BrokenS3())
    bedrock.reply(input_tokens=4, output_tokens=2)
    logging.getLogger("chalicelib").addHandler(caplog.handler)
    try:
        response = chat(client, {"prompt": "hi"})
    finally:
        logging.getLogger("chalicelib").removeHandler(caplog.handler)
    assert response.status_code == 503
    assert "response" not in response.json_body
    assert "internal error" not in response.body.decode()
    assert stored_events() == []
    logged = [r for r in caplog.records if r.getMessage() == "usage event not durable"]
    assert len(logged) == 1
    event = logged[0].usage_event  # type: ignore[attr-defined]
    assert (event["tenant_id"], event["input_tokens"], event["output_tokens"]) == ("tenant-a", 4, 2)


def test_error_bodies_never_carry_a_stack_trace(client: Client, bedrock: Bedrock) -> None:
    wiring.override(model=None)  # an unexpected failure inside the handler
    response = chat(client, {"prompt": "hi"})
    assert response.status_code == 500
    assert response.json_body == {
        "Code": "InternalServerError",
        "Message": "An internal server error occurred.",
    }
