"""Idempotency keys: what a claim meets decides the answer; the in-memory store agrees."""

from __future__ import annotations

import dataclasses

import pytest

from chalicelib.errors import InvalidRequestError
from chalicelib.idempotency import (
    RETENTION_S,
    Answer,
    Claimed,
    InFlight,
    InMemoryIdempotencyStore,
    KeyRecord,
    Mismatch,
    Replay,
    body_fingerprint,
    decide,
    idempotency_key,
    key_digest,
    new_record,
)

NOW = 1_800_000_000.0
ANSWER = Answer(200, '{"response": "hi"}', "event-1")


def record(lease: str = "event-1", lease_s: float = 29, body: bytes = b"{}") -> KeyRecord:
    return new_record(
        "tenant-a",
        key_digest("k"),
        body_fingerprint(body),
        lease=lease,
        lease_until=NOW + lease_s,
        now=NOW,
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Idempotency-Key": "abc"}, "abc"),
        ({"idempotency-key": "a b~!"}, "a b~!"),
        ({"Idempotency-Key": "k" * 255}, "k" * 255),
    ],
)
def test_a_key_is_1_to_255_printable_ascii_characters(
    headers: dict[str, str], expected: str | None
) -> None:
    assert idempotency_key(headers) == expected


@pytest.mark.parametrize("value", ["", "k" * 256, "é", "a\tb", "\x7f"])
def test_other_keys_are_invalid(value: str) -> None:
    with pytest.raises(InvalidRequestError, match="Idempotency-Key"):
        idempotency_key({"Idempotency-Key": value})


def test_keys_are_stored_by_digest_and_bodies_compared_by_bytes() -> None:
    assert key_digest("k") == key_digest("k") != key_digest("K")
    assert len(key_digest("x" * 255)) == 64
    assert body_fingerprint(b'{"a":1}') == body_fingerprint('{"a":1}')
    assert body_fingerprint(b'{"a":1}') != body_fingerprint(b'{"a": 1}')


def test_what_a_claim_meets() -> None:
    live = record()
    assert decide(live, live.fingerprint, NOW) == InFlight(2)
    assert decide(record(lease_s=1), record().fingerprint, NOW + 0.5) == InFlight(1)
    assert decide(live, body_fingerprint(b"[]"), NOW) == Mismatch()
    done = dataclasses.replace(live, state="done", answer=ANSWER)
    assert decide(done, live.fingerprint, NOW + 3600) == Replay(ANSWER)
    assert decide(live, live.fingerprint, NOW + 30) is None
    assert decide(done, live.fingerprint, NOW + RETENTION_S) is None


def test_the_in_memory_store_claims_completes_and_abandons_under_the_lease() -> None:
    store = InMemoryIdempotencyStore()
    first = record()
    assert store.claim(first, NOW) == Claimed(first)
    second = record(lease="event-2")
    assert isinstance(store.claim(second, NOW + 1), InFlight)
    assert not store.complete(second, ANSWER)
    assert store.complete(first, ANSWER)
    assert store.claim(second, NOW + 1) == Replay(ANSWER)

    abandoned = InMemoryIdempotencyStore()
    abandoned.claim(first, NOW)
    assert not abandoned.abandon(second)
    assert abandoned.abandon(first)
    assert abandoned.claim(second, NOW + 1) == Claimed(second)
