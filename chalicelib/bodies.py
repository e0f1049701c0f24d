"""Strict JSON request bodies: UTF-8, one value per key, finite numbers, valid Unicode."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from chalicelib.errors import InvalidRequestError

# Longest integer or float literal accepted. Python refuses to parse integers of more than
# 4,300 digits with an error of its own; nothing in an API body needs more than a few dozen.
MAX_NUMBER_CHARS = 64
# Longest key quoted back in an error message.
_SHOWN_KEY_CHARS = 40

NOT_JSON = "Request body is not valid JSON."
NOT_UTF8 = "Request body is not valid JSON: it must be UTF-8 text."
TOO_DEEP = "Request body is nested too deeply."
NOT_FINITE = "Request body contains NaN or Infinity, which JSON does not allow."
TOO_LONG_NUMBER = f"Request body contains a number longer than {MAX_NUMBER_CHARS} characters."
OUT_OF_RANGE = "Request body contains a number out of range."
LONE_SURROGATE = (
    "Request body contains a \\u escape that is not a Unicode character (a lone surrogate)."
)

# A \u escape in the surrogate range (D800-DFFF). Valid pairs (emoji) match as well; only a
# body that has one is walked for lone halves, so the usual body costs one regex scan.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _BodyError(ValueError):
    """Raised from inside json's hooks; carries the message for the caller."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                shown = key[:_SHOWN_KEY_CHARS].encode("ascii", "backslashreplace").decode()
                raise _BodyError(f"Request body has the key '{shown}' more than once.")
            seen.add(key)
    return obj


def _constant(_name: str) -> Any:
    raise _BodyError(NOT_FINITE)


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _BodyError(TOO_LONG_NUMBER)
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _BodyError(TOO_LONG_NUMBER)
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf
        raise _BodyError(OUT_OF_RANGE)
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_constant=_constant, parse_int=_int, parse_float=_float
)


def parse_json_body(raw_body: bytes | str | None, *, required: str) -> Any:
    """The JSON value of a request body; InvalidRequestError with a message saying what is
    wrong. `required` is the message for a missing body.

    Stricter than `json.loads`, which takes UTF-16 and UTF-32 bytes, duplicate keys (the last
    wins), NaN and Infinity, lone surrogates (text no UTF-8 encoder can write back) and
    arbitrarily long numbers, and raises RecursionError on deep nesting.
    """
    if raw_body is None or len(raw_body) == 0:
        raise InvalidRequestError(required)
    if isinstance(raw_body, bytes):
        try:
            text = raw_body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequestError(NOT_UTF8) from None
    else:
        text = raw_body
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequestError(LONE_SURROGATE) from None
    try:
        value = _DECODER.decode(text)
    except _BodyError as exc:
        raise InvalidRequestError(str(exc)) from None
    except RecursionError:
        raise InvalidRequestError(TOO_DEEP) from None
    except ValueError:  # JSONDecodeError, and int()'s own digit limit
        raise InvalidRequestError(NOT_JSON) from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise InvalidRequestError(LONE_SURROGATE)
    return value


def _has_lone_surrogate(value: Any) -> bool:
    # An explicit stack: the document may be nested as deeply as json's parser allows.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
