"""Local Bedrock stand-in over loopback HTTP, called by an unchanged boto3 client."""

from __future__ import annotations

import http.client
import json
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from chalicelib.budgets.limits import estimate_input_tokens
from chalicelib.conversation import Conversation, Message
from local.bedrock_server import (
    INVALID_MODEL_MESSAGE,
    BedrockServer,
    ChatMessage,
    EchoEngine,
    LlamaEngine,
    ModelCatalog,
    serve,
)

ROOT = Path(__file__).resolve().parents[2]
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
PROFILE_ARN = (
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
    "us.anthropic.claude-3-haiku-20240307-v1:0"
)


def bedrock_client(server: BedrockServer, **config: Any) -> Any:
    # One attempt, so injected errors reach the test rather than botocore's retries. In a
    # Config, `max_attempts` counts retries (1 would mean two calls); `total_max_attempts`
    # counts calls.
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{server.port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, **config),
    )


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def raw_request(
    server: BedrockServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def set_faults(server: BedrockServer, **counts: int) -> dict[str, int]:
    status, _, pending = raw_request(server, "POST", "/_faults", json.dumps(counts).encode())
    assert status == 200
    return dict(pending)


def error_code(caught: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def echo_server() -> Iterator[BedrockServer]:
    server = serve("127.0.0.1", 0, EchoEngine())
    yield server
    server.stop()


@pytest.fixture
def server(echo_server: BedrockServer) -> Iterator[BedrockServer]:
    yield echo_server
    echo_server.faults.configure({"throttle": 0, "model_error": 0})


@pytest.fixture
def bedrock(server: BedrockServer) -> Any:
    return bedrock_client(server)


# --- echo engine --------------------------------------------------------------------------


def test_calls_ledger_lists_served_calls_with_their_usage(
    bedrock: Any, server: BedrockServer
) -> None:
    before = len(server.calls.snapshot())
    response = bedrock.converse(modelId=PROFILE_ARN, messages=user("count these words"))
    set_faults(server, throttle=1)
    with pytest.raises(ClientError):
        bedrock.converse(modelId=HAIKU, messages=user("refused"))

    status, _, body = raw_request(server, "GET", "/_calls")

    assert status == 200
    served = body["calls"][before:]
    assert len(served) == 1  # the throttled call never reached the model
    assert served[0]["modelId"] == PROFILE_ARN
    assert served[0]["inputTokens"] == response["usage"]["inputTokens"]
    assert served[0]["outputTokens"] == response["usage"]["outputTokens"]
    assert served[0]["totalTokens"] == response["usage"]["totalTokens"]


def test_converse_returns_reply_with_usage(bedrock: Any) -> None:
    response = bedrock.converse(
        modelId=HAIKU,
        messages=user("How many tokens is this?"),
        system=[{"text": "Answer briefly."}],
        inferenceConfig={"maxTokens": 50, "temperature": 0.2},
    )

    assert response["output"] == {
        "message": {"role": "assistant", "content": [{"text": "echo: How many tokens is this?"}]}
    }
    assert response["stopReason"] == "end_turn"
    assert response["usage"] == {"inputTokens": 7, "outputTokens": 6, "totalTokens": 13}
    assert response["metrics"]["latencyMs"] >= 0
    assert response["ResponseMetadata"]["RequestId"]


def test_max_tokens_truncation_reports_max_tokens(bedrock: Any) -> None:
    response = bedrock.converse(
        modelId=HAIKU, messages=user("a b c d e f"), inferenceConfig={"maxTokens": 2}
    )

    assert response["stopReason"] == "max_tokens"
    assert response["usage"]["outputTokens"] == 2


@pytest.mark.parametrize(
    "model_id",
    [
        HAIKU,
        PROFILE_ARN,
        "us.anthropic.claude-3-haiku-20240307-v1:0",
        "amazon.nova-micro-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-1-8b-instruct-v1:0",
    ],
)
def test_every_priced_model_id_form_is_answered_and_decoded(
    bedrock: Any, model_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="local.bedrock_server"):
        response = bedrock.converse(modelId=model_id, messages=user("hi"))

    assert response["output"]["message"]["content"] == [{"text": "echo: hi"}]
    assert f"converse model={model_id} " in caplog.text


@pytest.mark.parametrize(
    "model_id", ["my-model", "acme.mystery-model-v1:0", "cohere.command-r-v1:0", "us.my-model"]
)
def test_an_unknown_model_id_is_a_validation_exception_as_bedrock_answers(
    bedrock: Any, server: BedrockServer, model_id: str
) -> None:
    before = len(server.calls.snapshot())
    with pytest.raises(ClientError) as caught:
        bedrock.converse(modelId=model_id, messages=user("hi"))

    assert error_code(caught) == ("ValidationException", 400)
    assert caught.value.response["Error"]["Message"] == INVALID_MODEL_MESSAGE
    assert len(server.calls.snapshot()) == before


@pytest.mark.parametrize(
    "model_id",
    [
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/unmapped",
        "arn:aws:bedrock:us-east-1::foundation-model/acme.mystery-model-v1:0",
    ],
)
def test_an_arn_naming_no_known_model_is_resource_not_found(bedrock: Any, model_id: str) -> None:
    with pytest.raises(ClientError) as caught:
        bedrock.converse(modelId=model_id, messages=user("hi"))

    assert error_code(caught) == ("ResourceNotFoundException", 404)


def test_an_application_profile_mapped_in_model_aliases_is_answered() -> None:
    profile = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/team-a"
    server = serve("127.0.0.1", 0, EchoEngine(), models=ModelCatalog(aliases={profile: HAIKU}))
    try:
        response = bedrock_client(server).converse(modelId=profile, messages=user("hi"))
    finally:
        server.stop()
    assert response["output"]["message"]["content"] == [{"text": "echo: hi"}]


def test_a_conversation_with_a_system_text_reaches_the_engine(bedrock: Any) -> None:
    response = bedrock.converse(
        modelId=HAIKU,
        messages=[
            {"role": "user", "content": [{"text": "one two"}]},
            {"role": "assistant", "content": [{"text": "three"}]},
            {"role": "user", "content": [{"text": "four five six"}]},
        ],
        system=[{"text": "seven eight"}],
    )

    assert response["output"]["message"]["content"] == [{"text": "echo: four five six"}]
    assert response["usage"]["inputTokens"] == 8  # every message's words and the system's


def test_empty_messages_is_validation_exception(bedrock: Any) -> None:
    with pytest.raises(ClientError) as caught:
        bedrock.converse(modelId=HAIKU, messages=[])

    assert error_code(caught) == ("ValidationException", 400)


def test_non_text_content_is_validation_exception(bedrock: Any) -> None:
    image = {"image": {"format": "png", "source": {"bytes": b"\x89PNG"}}}

    with pytest.raises(ClientError) as caught:
        bedrock.converse(modelId=HAIKU, messages=[{"role": "user", "content": [image]}])

    assert error_code(caught) == ("ValidationException", 400)
    assert "only text content" in caught.value.response["Error"]["Message"]


def test_max_tokens_above_limit_is_validation_exception(bedrock: Any) -> None:
    # botocore itself only checks maxTokens >= 1; the upper bound is the service's.
    with pytest.raises(ClientError) as caught:
        bedrock.converse(modelId=HAIKU, messages=user("hi"), inferenceConfig={"maxTokens": 4097})

    assert error_code(caught) == ("ValidationException", 400)


def test_malformed_json_is_validation_exception_in_bedrock_error_shape(
    server: BedrockServer,
) -> None:
    status, headers, payload = raw_request(
        server,
        "POST",
        "/model/m/converse",
        b"{oops",
        {
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/...",
            "Content-Type": "application/json",
        },
    )

    assert status == 400
    assert headers["x-amzn-ErrorType"] == "ValidationException"
    assert headers["x-amzn-RequestId"]
    assert "not valid JSON" in payload["message"]


def test_throttle_fault_surfaces_as_throttling_exception(
    server: BedrockServer, bedrock: Any
) -> None:
    assert set_faults(server, throttle=1) == {"throttle": 1, "model_error": 0}

    with pytest.raises(ClientError) as caught:
        bedrock.converse(modelId=HAIKU, messages=user("hi"))

    assert error_code(caught) == ("ThrottlingException", 429)
    assert bedrock.converse(modelId=HAIKU, messages=user("hi"))["stopReason"] == "end_turn"
    assert raw_request(server, "GET", "/_faults")[2] == {"throttle": 0, "model_error": 0}


def test_model_error_fault_surfaces_as_model_error_exception(
    server: BedrockServer, bedrock: Any
) -> None:
    set_faults(server, model_error=2)

    for _ in range(2):
        with pytest.raises(ClientError) as caught:
            bedrock.converse(modelId=HAIKU, messages=user("hi"))
        assert error_code(caught) == ("ModelErrorException", 424)
    assert bedrock.converse(modelId=HAIKU, messages=user("hi"))["usage"]["inputTokens"] == 1


def test_invalid_fault_request_is_rejected(server: BedrockServer) -> None:
    status, headers, _ = raw_request(server, "POST", "/_faults", b'{"throttle": -1}')

    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException")


def test_unsigned_request_is_access_denied(server: BedrockServer) -> None:
    unsigned = bedrock_client(server, signature_version=UNSIGNED)

    with pytest.raises(ClientError) as caught:
        unsigned.converse(modelId=HAIKU, messages=user("hi"))

    assert error_code(caught) == ("AccessDeniedException", 403)


def test_unknown_path_is_404_unknown_operation(server: BedrockServer) -> None:
    status, headers, payload = raw_request(server, "GET", "/model/m/converse")

    assert (status, headers["x-amzn-ErrorType"]) == (404, "UnknownOperationException")
    assert payload["message"]


def test_health_reports_engine(server: BedrockServer) -> None:
    assert raw_request(server, "GET", "/health")[::2] == (200, {"status": "ok", "engine": "echo"})


def test_stop_ends_kept_alive_connections_and_their_threads() -> None:
    server = serve("127.0.0.1", 0, EchoEngine())
    client = bedrock_client(server)
    client.converse(modelId=HAIKU, messages=user("hi"))  # leaves a pooled keep-alive connection

    server.stop()

    prefix = f"local-bedrock-{server.port}"
    assert not [t for t in threading.enumerate() if t.name.startswith(prefix)]
    client.close()


def test_cli_prints_ready_line_and_stops_cleanly_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "local.bedrock_server", "--engine", "echo", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith("Local Bedrock ready on http://127.0.0.1:")
        port = int(ready.split("http://127.0.0.1:")[1].split()[0])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200
        connection.close()

        process.send_signal(signal.SIGTERM)

        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


# --- the real model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama() -> Iterator[tuple[BedrockServer, LlamaEngine]]:
    engine = LlamaEngine()
    server = serve("127.0.0.1", 0, engine)
    yield server, engine
    server.stop()


def test_llama_reply_carries_the_token_counts_the_model_reported(
    llama: tuple[BedrockServer, LlamaEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, engine = llama
    reported: list[dict[str, int]] = []
    original = engine.model.create_chat_completion

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        reported.append(result["usage"])
        return result

    monkeypatch.setattr(engine.model, "create_chat_completion", spy)

    response = bedrock_client(server).converse(
        modelId=HAIKU, messages=user("Name one colour."), inferenceConfig={"maxTokens": 16}
    )

    usage = response["usage"]
    assert response["output"]["message"]["content"][0]["text"].strip()
    assert response["stopReason"] in ("end_turn", "max_tokens")
    assert [(usage["inputTokens"], usage["outputTokens"])] == [
        (r["prompt_tokens"], r["completion_tokens"]) for r in reported
    ]
    assert usage["inputTokens"] > 0
    assert 1 <= usage["outputTokens"] <= 16
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    # The pre-flight count that guards the context window measures the same prompt.
    assert (
        engine.count_prompt_tokens([ChatMessage("user", "Name one colour.")], None)
        == (usage["inputTokens"])
    )


def test_the_budgets_input_estimate_covers_the_real_models_count(
    llama: tuple[BedrockServer, LlamaEngine],
) -> None:
    _, engine = llama
    texts = ["Hi.", "Hello! How can I help?", "Name a colour.", "Blue.", "Another one, in French."]
    for system in (None, "You answer in one word."):
        for count in (1, 3, 5):
            messages = tuple(
                Message("user" if n % 2 == 0 else "assistant", text)
                for n, text in enumerate(texts[:count])
            )
            real = engine.count_prompt_tokens(
                [ChatMessage(m.role, m.text) for m in messages], system
            )
            assert real <= estimate_input_tokens(Conversation(messages, system)), (count, system)


def test_llama_prompt_overflowing_context_is_validation_exception(
    llama: tuple[BedrockServer, LlamaEngine],
) -> None:
    server, _ = llama

    with pytest.raises(ClientError) as caught:
        bedrock_client(server).converse(
            modelId=HAIKU, messages=user("word " * 1500), inferenceConfig={"maxTokens": 1024}
        )

    assert error_code(caught) == ("ValidationException", 400)
    assert "context window" in caught.value.response["Error"]["Message"]


def test_llama_serves_concurrent_requests_one_at_a_time(
    llama: tuple[BedrockServer, LlamaEngine],
) -> None:
    server, _ = llama
    client = bedrock_client(server)
    results: list[dict[str, int]] = []

    def call() -> None:
        response = client.converse(
            modelId=HAIKU, messages=user("Say hi."), inferenceConfig={"maxTokens": 4}
        )
        results.append(response["usage"])

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(results) == 3
    assert all(1 <= usage["outputTokens"] <= 4 for usage in results)


# --- latency --------------------------------------------------------------------------------


def test_kept_alive_calls_do_not_stall_on_nagle_and_delayed_acks(bedrock: Any) -> None:
    """A response is two writes (headers, body); without TCP_NODELAY the body waited for the
    client's delayed ACK of the headers, about 40 ms per call on a kept-alive connection."""
    import statistics
    import time

    elapsed = []
    for _ in range(12):
        started = time.perf_counter()
        bedrock.converse(modelId=HAIKU, messages=user("hi"), inferenceConfig={"maxTokens": 4})
        elapsed.append(time.perf_counter() - started)
    assert statistics.median(elapsed[2:]) < 0.025
