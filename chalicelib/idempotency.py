"""Idempotency-Key on POST /bedrock/chat: a retried request gets the first answer, billed once.

A key names one request of one tenant for 24 hours. Its record moves through two states:

    (none) --claim--> in_flight --complete--> done       the answer, replayed to retries
                          |
                          +--abandon--> (none)            refusal, error, 503, 504: the key
                          |                               is free for a retry to run again
                          +--lease expires--> (claimable by the same body again)

A claim is one conditional write. It fails, returning the record it met, when the key is
done (a replay: same status, body and X-Request-Id; no model call, nothing billed), in
flight under a live lease (409 with Retry-After), or was used with a different body (422).
The lease lasts until the claiming request's own deadline, after which that request has
answered or is dead: a process that died mid-call leaves an expired lease, and the next
request with the same key and body takes the key over and runs the call again.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from chalicelib.errors import InvalidRequestError

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
RETENTION_S = 24 * 3600
# Retry-After on a 409: a call usually ends within seconds, so the client asks again soon
# rather than waiting for the first request's whole deadline.
IN_FLIGHT_RETRY_AFTER_S = 2
State = Literal["in_flight", "done"]
INVALID_KEY = (
    f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters "
    "(letters, digits, punctuation, space)."
)


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The request's Idempotency-Key, None without one; InvalidRequestError if malformed."""
    value = headers.get(HEADER)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == HEADER.lower()), None)
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in value):
        raise InvalidRequestError(INVALID_KEY)
    return value


def key_digest(key: str) -> str:
    """What the key is stored under: its SHA-256, so any printable key makes a safe sort key."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def body_fingerprint(raw_body: bytes | str | None) -> str:
    """The request body's SHA-256: a key replays only for the same bytes."""
    data = raw_body.encode("utf-8") if isinstance(raw_body, str) else (raw_body or b"")
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Answer:
    """The HTTP answer a completed call gave: what a replay returns."""

    status: int
    body: str  # the exact JSON text
    request_id: str  # X-Request-Id: the usage event that billed the call


@dataclass(frozen=True)
class KeyRecord:
    """One tenant's use of one key."""

    tenant_id: str
    key_digest: str
    fingerprint: str
    state: State
    lease: str  # the claiming call's event id
    lease_until: float  # epoch seconds; the claim may be taken over after this
    expires_at: int  # epoch seconds; the record is forgotten after this
    answer: Answer | None = None


@dataclass(frozen=True)
class Claimed:
    """The key is ours: run the call, then complete or abandon it."""

    record: KeyRecord


@dataclass(frozen=True)
class Replay:
    """The key was used for this very request, which completed: answer as it did."""

    answer: Answer


@dataclass(frozen=True)
class InFlight:
    """The first request with this key is still running."""

    retry_after_s: int


@dataclass(frozen=True)
class Mismatch:
    """The key was used for a different request body."""


ClaimResult = Claimed | Replay | InFlight | Mismatch


def decide(found: KeyRecord, fingerprint: str, now: float) -> ClaimResult | None:
    """What a claim meets in an existing record; None when the record can be (re)claimed."""
    if found.expires_at <= now:
        return None
    if found.fingerprint != fingerprint:
        return Mismatch()
    if found.state == "done" and found.answer is not None:
        return Replay(found.answer)
    if found.lease_until > now:
        return InFlight(max(1, min(IN_FLIGHT_RETRY_AFTER_S, math.ceil(found.lease_until - now))))
    return None  # a claim whose request died: take it over


def new_record(
    tenant_id: str, digest: str, fingerprint: str, *, lease: str, lease_until: float, now: float
) -> KeyRecord:
    """The record a claim writes."""
    return KeyRecord(
        tenant_id=tenant_id,
        key_digest=digest,
        fingerprint=fingerprint,
        state="in_flight",
        lease=lease,
        lease_until=lease_until,
        expires_at=int(now) + RETENTION_S,
    )


class IdempotencyStore(Protocol):
    """Key records (chalicelib.request_items.DynamoRequestItems in production).

    Every method raises IdempotencyStoreUnavailableError when the store cannot answer.
    """

    def claim(self, record: KeyRecord, now: float) -> ClaimResult:
        """Write `record` unless a live record of the key says otherwise (one atomic write)."""
        ...

    def complete(self, record: KeyRecord, answer: Answer) -> bool:
        """Store the answer, if the claim is still ours."""
        ...

    def abandon(self, record: KeyRecord) -> bool:
        """Forget the claim, if it is still ours."""
        ...


class InMemoryIdempotencyStore:
    """A thread-safe IdempotencyStore with the same semantics, for tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: dict[tuple[str, str], KeyRecord] = {}

    def claim(self, record: KeyRecord, now: float) -> ClaimResult:
        key = (record.tenant_id, record.key_digest)
        with self._lock:
            found = self.records.get(key)
            outcome = decide(found, record.fingerprint, now) if found else None
            if outcome is not None:
                return outcome
            self.records[key] = record
            return Claimed(record)

    def complete(self, record: KeyRecord, answer: Answer) -> bool:
        key = (record.tenant_id, record.key_digest)
        with self._lock:
            found = self.records.get(key)
            if found is None or found.lease != record.lease:
                return False
            self.records[key] = replace(found, state="done", answer=answer)
            return True

    def abandon(self, record: KeyRecord) -> bool:
        key = (record.tenant_id, record.key_digest)
        with self._lock:
            found = self.records.get(key)
            if found is None or found.lease != record.lease:
                return False
            del self.records[key]
            return True
