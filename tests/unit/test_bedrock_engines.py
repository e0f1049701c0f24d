"""Local Bedrock stand-in, pure parts: the echo engine, request/response translation, faults."""

from __future__ import annotations

import json
from typing import Any

import pytest

from local.bedrock_server import (
    MAX_MAX_TOKENS,
    ChatMessage,
    EchoEngine,
    FaultInjector,
    Generation,
    ModelError,
    ThrottlingError,
    ValidationError,
    build_converse_response,
    default_threads,
    match_converse_path,
    parse_converse_request,
)


def body(**payload: Any) -> bytes:
    return json.dumps(payload).encode()


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


# --- EchoEngine ---------------------------------------------------------------------------


def echo(
    *messages: ChatMessage,
    system: str | None = None,
    max_tokens: int = 100,
    stop: tuple[str, ...] = (),
) -> Generation:
    return EchoEngine().generate(list(messages), system, max_tokens, None, stop)


def test_echo_replies_with_last_user_text() -> None:
    generation = echo(
        ChatMessage("user", "first question"),
        ChatMessage("assistant", "an answer"),
        ChatMessage("user", "second question here"),
    )

    assert generation == Generation("echo: second question here", 7, 4, "end_turn")


def test_echo_counts_system_words_as_input_tokens() -> None:
    generation = echo(ChatMessage("user", "hello there"), system="You are terse.")

    assert generation.input_tokens == 5


def test_echo_truncated_at_max_tokens_reports_max_tokens() -> None:
    generation = echo(ChatMessage("user", "one two three four"), max_tokens=3)

    assert generation == Generation("echo: one two", 4, 3, "max_tokens")


def test_echo_cut_at_stop_sequence_reports_stop_sequence() -> None:
    generation = echo(ChatMessage("user", "alpha beta STOP gamma"), stop=("STOP", "gamma"))

    assert generation == Generation("echo: alpha beta", 4, 3, "stop_sequence")


def test_echo_max_tokens_before_stop_sequence_wins() -> None:
    generation = echo(ChatMessage("user", "alpha beta STOP"), max_tokens=2, stop=("STOP",))

    assert (generation.text, generation.stop_reason) == ("echo: alpha", "max_tokens")


def test_echo_is_deterministic() -> None:
    messages = (ChatMessage("user", "same words"),)

    assert echo(*messages) == echo(*messages)


# --- request parsing ----------------------------------------------------------------------


def test_full_request_is_parsed() -> None:
    request = parse_converse_request(
        "us.anthropic.claude-3-haiku-20240307-v1:0",
        body(
            messages=[
                user("Hi"),
                {"role": "assistant", "content": [{"text": "Hello"}]},
                {"role": "user", "content": [{"text": "part one"}, {"text": "part two"}]},
            ],
            system=[{"text": "Be brief."}, {"text": "Be kind."}],
            inferenceConfig={
                "maxTokens": 64,
                "temperature": 0.5,
                "topP": 1,
                "stopSequences": ["\n\nHuman:"],
            },
        ),
    )

    assert request.model_id == "us.anthropic.claude-3-haiku-20240307-v1:0"
    assert request.messages == (
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "Hello"),
        ChatMessage("user", "part one\npart two"),
    )
    assert request.system == "Be brief.\nBe kind."
    assert (request.max_tokens, request.temperature, request.top_p) == (64, 0.5, 1.0)
    assert request.stop_sequences == ("\n\nHuman:",)


def test_minimal_request_gets_defaults() -> None:
    request = parse_converse_request("m", body(messages=[user("Hi")]))

    assert request.system is None
    assert (request.temperature, request.top_p, request.stop_sequences) == (None, None, ())
    assert 1 <= request.max_tokens <= MAX_MAX_TOKENS


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "JSON object"),
        (body(), "messages is required"),
        (body(messages=[]), "non-empty list"),
        (body(messages=[{"role": "system", "content": [{"text": "x"}]}]), "role"),
        (body(messages=[{"role": "assistant", "content": [{"text": "x"}]}]), "alternate"),
        (body(messages=[user("a"), user("b")]), "alternate"),
        (body(messages=[{"role": "user", "content": []}]), "non-empty list of content"),
        (body(messages=[{"role": "user", "content": [{"text": "   "}]}]), "blank"),
        (
            body(messages=[{"role": "user", "content": [{"image": {"format": "png"}}]}]),
            "only text content",
        ),
        (body(messages=[user("a")], system=[{"document": {}}]), "only text content"),
        (body(messages=[user("a")], inferenceConfig={"maxTokens": 0}), "between 1 and 4096"),
        (body(messages=[user("a")], inferenceConfig={"maxTokens": 4097}), "between 1 and 4096"),
        (body(messages=[user("a")], inferenceConfig={"maxTokens": "10"}), "integer"),
        (body(messages=[user("a")], inferenceConfig={"maxTokens": True}), "integer"),
        (body(messages=[user("a")], inferenceConfig={"temperature": 1.5}), "temperature"),
        (body(messages=[user("a")], inferenceConfig={"topP": -0.1}), "topP"),
        (body(messages=[user("a")], inferenceConfig={"stopSequences": [""]}), "stopSequences"),
        (body(messages=[user("a")], inferenceConfig=[]), "inferenceConfig"),
        (body(messages=[user("a")], toolConfig={"tools": []}), "toolConfig is not supported"),
    ],
)
def test_invalid_request_is_validation_error(raw: bytes, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment) as caught:
        parse_converse_request("m", raw)

    assert (caught.value.code, caught.value.status) == ("ValidationException", 400)


# --- paths and responses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "model_id"),
    [
        (
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            "anthropic.claude-3-haiku-20240307-v1:0",
        ),
        (
            "/model/us.anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            "us.anthropic.claude-3-haiku-20240307-v1:0",
        ),
        (
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile"
            "%2Fus.anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
            "us.anthropic.claude-3-haiku-20240307-v1:0",
        ),
        (
            "/model/arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0/converse",
            "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0",
        ),
    ],
)
def test_converse_path_yields_decoded_model_id(path: str, model_id: str) -> None:
    assert match_converse_path(path) == model_id


@pytest.mark.parametrize(
    "path", ["/model/m/converse-stream", "/model//converse", "/converse", "/model/m/invoke"]
)
def test_other_paths_are_not_converse(path: str) -> None:
    assert match_converse_path(path) is None


def test_response_has_bedrock_shape_and_total() -> None:
    response = build_converse_response(Generation("Hi there", 12, 3, "max_tokens"), 250)

    assert response == {
        "output": {"message": {"role": "assistant", "content": [{"text": "Hi there"}]}},
        "stopReason": "max_tokens",
        "usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15},
        "metrics": {"latencyMs": 250},
    }


# --- faults and knobs ---------------------------------------------------------------------


def test_faults_fail_that_many_calls_throttling_first() -> None:
    faults = FaultInjector()
    faults.configure({"throttle": 1, "model_error": 1})

    with pytest.raises(ThrottlingError):
        faults.take()
    with pytest.raises(ModelError):
        faults.take()
    faults.take()

    assert faults.snapshot() == {"throttle": 0, "model_error": 0}


def test_configuring_one_fault_keeps_the_other() -> None:
    faults = FaultInjector()
    faults.configure({"model_error": 2})

    assert faults.configure({"throttle": 3}) == {"throttle": 3, "model_error": 2}


@pytest.mark.parametrize(
    "counts", [{"throttle": -1}, {"throttle": "1"}, {"throttle": True}, {"timeout": 1}]
)
def test_invalid_fault_counts_are_rejected(counts: dict[str, object]) -> None:
    faults = FaultInjector()

    with pytest.raises(ValidationError):
        faults.configure(counts)
    assert faults.snapshot() == {"throttle": 0, "model_error": 0}


def test_default_threads_is_bounded() -> None:
    assert 1 <= default_threads() <= 4
