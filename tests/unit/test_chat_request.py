"""Chat request validation: every malformed body is refused with a message naming the problem."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.chat import ChatLimits, ChatRequest, parse_chat_request
from chalicelib.conversation import Conversation, Message
from chalicelib.errors import InvalidRequestError

LIMITS = ChatLimits(max_prompt_chars=100, max_tokens_limit=256, max_messages=5)


def parse(body: Any) -> ChatRequest:
    return parse_chat_request(json.dumps(body), LIMITS)


def turns(*texts: str) -> list[dict[str, str]]:
    """Messages alternating user and assistant, from the user."""
    return [
        {"role": "user" if n % 2 == 0 else "assistant", "content": text}
        for n, text in enumerate(texts)
    ]


def test_prompt_alone_leaves_max_tokens_and_model_to_the_chat_service() -> None:
    assert parse_chat_request(b'{"prompt": "hi"}', LIMITS) == ChatRequest.from_prompt("hi")


def test_max_tokens_within_bounds_is_kept() -> None:
    assert parse({"prompt": "hi", "max_tokens": 256}).max_tokens == 256


def test_tenant_id_in_the_body_is_ignored() -> None:
    assert parse({"prompt": "hi", "tenant_id": "evil"}) == ChatRequest.from_prompt("hi")


def test_a_conversation_and_a_system_text_are_kept_in_order() -> None:
    request = parse({"messages": turns("Hi.", "Hello!", "Name a colour."), "system": "Be brief."})
    assert request.conversation == Conversation(
        (Message("user", "Hi."), Message("assistant", "Hello!"), Message("user", "Name a colour.")),
        "Be brief.",
    )


def test_a_prompt_may_have_a_system_text() -> None:
    assert parse({"prompt": "hi", "system": "Be brief."}).conversation == Conversation(
        (Message("user", "hi"),), "Be brief."
    )


@pytest.mark.parametrize(
    "model",
    [
        "anthropic.claude-3-haiku-20240307-v1:0",
        "us.anthropic.claude-3-haiku-20240307-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
        "acme.not-a-real-model-v1:0",  # well-formed: the chat service refuses and records it
    ],
)
def test_a_model_id_profile_id_or_arn_is_taken_as_given(model: str) -> None:
    assert parse({"prompt": "hi", "model": model}).model_id == model


def test_the_size_limit_counts_every_message_and_the_system_text() -> None:
    fits = parse({"messages": turns("a" * 40, "b" * 40, "c" * 10), "system": "d" * 10})
    assert fits.conversation.chars == 100
    with pytest.raises(InvalidRequestError, match="'messages' and 'system' too long: at most 100"):
        parse({"messages": turns("a" * 40, "b" * 40, "c" * 10), "system": "d" * 11})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "body is required"),
        (b"", "body is required"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'["prompt"]', "JSON object"),
        (b'"hello"', "JSON object"),
        (b"{}", "'prompt' or 'messages' is required"),
        (b'{"prompt": 5}', "'prompt' must be a string"),
        (b'{"prompt": null}', "'prompt' must be a string"),
        (b'{"prompt": ""}', "'prompt' must not be empty"),
        (b'{"prompt": "   \\n"}', "'prompt' must not be empty"),
        (json.dumps({"prompt": "x" * 101}).encode(), "'prompt' too long: at most 100 characters"),
        (
            json.dumps({"prompt": "x" * 90, "system": "y" * 11}).encode(),
            "'prompt' and 'system' too long: at most 100 characters",
        ),
        (b'{"prompt": "hi", "system": 3}', "'system' must be a string"),
        (b'{"prompt": "hi", "system": " "}', "'system' must not be empty"),
        (b'{"prompt": "hi", "max_tokens": 0}', "between 1 and 256"),
        (b'{"prompt": "hi", "max_tokens": 257}', "between 1 and 256"),
        (b'{"prompt": "hi", "max_tokens": -1}', "between 1 and 256"),
        (b'{"prompt": "hi", "max_tokens": "10"}', "must be an integer"),
        (b'{"prompt": "hi", "max_tokens": 1.5}', "must be an integer"),
        (b'{"prompt": "hi", "max_tokens": true}', "must be an integer"),
        (b'{"prompt": "hi", "model": ""}', "'model' must be a Bedrock model id"),
        (b'{"prompt": "hi", "model": null}', "'model' must be a Bedrock model id"),
        (b'{"prompt": "hi", "model": ["a"]}', "'model' must be a Bedrock model id"),
        (b'{"prompt": "hi", "model": "a b"}', "'model' must be a Bedrock model id"),
        (b'{"prompt": "hi", "model": "m\\n"}', "'model' must be a Bedrock model id"),
        (json.dumps({"prompt": "hi", "model": "m" * 257}).encode(), "up to 256"),
    ],
)
def test_bad_bodies_are_refused_with_a_message_naming_the_problem(
    body: bytes | None, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse_chat_request(body, LIMITS)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "hi", "messages": turns("hi")}, "either 'prompt' or 'messages', not both"),
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"messages": "hi"}, "'messages' must be a non-empty list"),
        ({"messages": None}, "'messages' must be a non-empty list"),
        ({"messages": ["hi"]}, r"'messages\[0\]' must be an object with 'role' and 'content'"),
        ({"messages": [{"role": "user"}]}, r"'messages\[0\]' must be an object with 'role'"),
        ({"messages": [{"content": "hi"}]}, r"'messages\[0\]' must be an object with 'role'"),
        (
            {"messages": [{"role": "user", "content": "hi", "name": "x"}]},
            r"'messages\[0\]' has an unknown field",
        ),
        ({"messages": [{"role": "system", "content": "hi"}]}, "must be 'user' or 'assistant'"),
        ({"messages": [{"role": "User", "content": "hi"}]}, "must be 'user' or 'assistant'"),
        ({"messages": [{"role": ["user"], "content": "hi"}]}, "must be 'user' or 'assistant'"),
        (
            {"messages": [{"role": "assistant", "content": "hi"}]},
            r"'messages\[0\]'.role must be 'user'",
        ),
        (
            {"messages": [*turns("a", "b"), {"role": "assistant", "content": "c"}]},
            r"'messages\[2\]'.role must be 'user': messages alternate",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            r"'messages\[1\]'.role must be 'assistant'",
        ),
        ({"messages": turns("a", "b")}, "'messages' must end with a 'user' message"),
        ({"messages": turns("a", "")}, r"'messages\[1\]'.content must not be empty"),
        ({"messages": turns("a", "b", " \t")}, r"'messages\[2\]'.content must not be empty"),
        (
            {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
            r"'messages\[0\]'.content must be a string",
        ),
        ({"messages": turns(*"abcdefg")}, "'messages' has too many messages: at most 5"),
        ({"messages": turns("a" * 101)}, "'messages' too long: at most 100 characters in all"),
    ],
    ids=[
        "prompt-and-messages",
        "empty-list",
        "not-a-list",
        "null",
        "not-an-object",
        "no-content",
        "no-role",
        "unknown-field",
        "system-role",
        "role-case",
        "role-not-a-string",
        "starts-with-assistant",
        "not-alternating-assistant-twice",
        "not-alternating-user-twice",
        "ends-with-assistant",
        "empty-text",
        "blank-text",
        "converse-content-blocks",
        "too-many",
        "too-long",
    ],
)
def test_malformed_conversations_are_refused_naming_the_field(body: Any, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse(body)


def test_too_many_messages_are_refused_before_any_is_read() -> None:
    # Not one message is valid: the count alone decides, so a huge list costs little.
    with pytest.raises(InvalidRequestError, match="too many messages"):
        parse({"messages": [None] * 10_000})
