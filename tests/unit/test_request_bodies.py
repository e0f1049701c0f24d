"""Strict JSON bodies: what json.loads takes or fails on in unusual ways is a clear 400."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.bodies import MAX_NUMBER_CHARS, parse_json_body
from chalicelib.errors import InvalidRequestError


def parse(raw: bytes | str | None) -> Any:
    return parse_json_body(raw, required="A body is required.")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "A body is required"),
        (b"", "A body is required"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"a": ' * 100_000, "nested too deeply"),
        (b'{"prompt": "\\ud800"}', "lone surrogate"),
        (b'{"prompt": "x\\udfff"}', "lone surrogate"),
        (b'{"\\ud800": 1}', "lone surrogate"),
        (b'{"a": ["\\ude00\\ud83d"]}', "lone surrogate"),
        ('{"prompt": "\ud800"}', "lone surrogate"),
        (b'{"a": 1, "a": 2}', "key 'a' more than once"),
        (b'{"a": {"b": 1, "b": 1}}', "key 'b' more than once"),
        (b'{"a": NaN}', "NaN or Infinity"),
        (b'{"a": Infinity}', "NaN or Infinity"),
        (b'{"a": -Infinity}', "NaN or Infinity"),
        (b'{"a": 1e999}', "out of range"),
        (b'{"a": -1e400}', "out of range"),
        (b'{"a": ' + b"9" * 5000 + b"}", f"longer than {MAX_NUMBER_CHARS}"),
        (b'{"a": 0.' + b"1" * 100 + b"}", f"longer than {MAX_NUMBER_CHARS}"),
        (b"\xff\xfe{\x00}\x00", "must be UTF-8"),
        ('{"a": 1}'.encode("utf-16"), "must be UTF-8"),
        ('{"a": 1}'.encode("utf-32"), "must be UTF-8"),
        (b'{"a": "\xc3"}', "must be UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "must be UTF-8"),  # a surrogate encoded as UTF-8 bytes
        (b"\xef\xbb\xbf{}", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b'{"a": 1} {"b": 2}', "not valid JSON"),
    ],
)
def test_unusual_bodies_are_invalid_requests_with_a_clear_message(
    body: bytes | str | None, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message.replace("(", r"\(")):
        parse(body)


def test_valid_bodies_parse_as_json_does() -> None:
    assert parse(b'{"prompt": "caf\\u00e9 \\ud83d\\ude00", "max_tokens": 64}') == {
        "prompt": "café 😀",
        "max_tokens": 64,
    }
    assert parse('{"a": [1, 2.5, -3e2, true, null, "x"]}') == {
        "a": [1, 2.5, -300.0, True, None, "x"]
    }
    assert parse(b"[" * 50 + b"]" * 50) == parse(b"[" * 50 + b"]" * 50)
