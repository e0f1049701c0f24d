"""Chat request validation: every malformed body is refused with a message naming the problem."""

from __future__ import annotations

import json

import pytest

from chalicelib.chat import ChatLimits, ChatRequest, parse_chat_request
from chalicelib.errors import InvalidRequestError

LIMITS = ChatLimits(max_prompt_chars=100, default_max_tokens=64, max_tokens_limit=256)


def test_prompt_alone_gets_the_default_max_tokens() -> None:
    assert parse_chat_request(b'{"prompt": "hi"}', LIMITS) == ChatRequest("hi", 64)


def test_max_tokens_within_bounds_is_kept() -> None:
    assert (
        parse_chat_request(json.dumps({"prompt": "hi", "max_tokens": 256}), LIMITS).max_tokens
        == 256
    )


def test_tenant_id_in_the_body_is_ignored() -> None:
    request = parse_chat_request(json.dumps({"prompt": "hi", "tenant_id": "evil"}), LIMITS)
    assert request == ChatRequest("hi", 64)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "body is required"),
        (b"", "body is required"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'["prompt"]', "JSON object"),
        (b'"hello"', "JSON object"),
        (b"{}", "'prompt' is required"),
        (b'{"prompt": 5}', "'prompt' must be a string"),
        (b'{"prompt": null}', "'prompt' must be a string"),
        (b'{"prompt": ""}', "must not be empty"),
        (b'{"prompt": "   \\n"}', "must not be empty"),
        (json.dumps({"prompt": "x" * 101}).encode(), "too long"),
        (b'{"prompt": "hi", "max_tokens": 0}', "between 1 and 256"),
        (b'{"prompt": "hi", "max_tokens": 257}', "between 1 and 256"),
        (b'{"prompt": "hi", "max_tokens": -1}', "between 1 and 256"),
        (b'{"prompt": "hi", "max_tokens": "10"}', "must be an integer"),
        (b'{"prompt": "hi", "max_tokens": 1.5}', "must be an integer"),
        (b'{"prompt": "hi", "max_tokens": true}', "must be an integer"),
    ],
)
def test_bad_bodies_are_refused_with_a_message_naming_the_problem(
    body: bytes | None, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse_chat_request(body, LIMITS)
