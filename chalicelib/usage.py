"""Usage events (schema v1): one JSON line per model call, the unit of billing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

SCHEMA_VERSION = 1
# Fields a schema-v1 line may leave out, and the value a reader takes instead.
FIELD_DEFAULTS: Mapping[str, Any] = {"request_count": 1}

Status = Literal["ok", "error", "rejected", "aborted"]
STATUSES: tuple[Status, ...] = ("ok", "error", "rejected", "aborted")


class TokenCounts(TypedDict):
    """Token counts as flat wire fields (usage events, /usage totals, plan views)."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    total_tokens: int


TOKEN_FIELDS: tuple[str, ...] = tuple(TokenCounts.__annotations__)


class UsageEventRecord(TypedDict):
    """The wire shape of a usage event, as written to Firehose and read back by the jobs.

    Flat, with the token counts declared in place: the order of these fields is the column
    order of the curated table (FIELDS), so it does not inherit TokenCounts.
    """

    event_id: str
    schema_version: int
    timestamp: str
    tenant_id: str
    user_id: str
    model_id: str
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    total_tokens: int
    status: str
    error_code: str | None
    latency_ms: int
    cost_usd: str
    price_version: str
    request_id: str
    stage: str
    # How many API requests the event stands for: 1, except for an aggregate of refusals
    # (one `rejected` event counting the refusals of a tenant, reason and minute). Added to
    # schema v1 as an optional field: a reader takes an absent value as 1.
    request_count: int


# Column order of the curated table: the reference design's columns first.
FIELDS: tuple[str, ...] = tuple(UsageEventRecord.__annotations__)


@dataclass(frozen=True)
class TokenUsage:
    """Token counts: one call's as the model reported them, or a sum of calls'."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_converse(cls, usage: dict[str, int]) -> TokenUsage:
        """Read Bedrock Converse's `usage` block; absent cache counts are zero."""
        input_tokens = int(usage.get("inputTokens", 0))
        output_tokens = int(usage.get("outputTokens", 0))
        cache_read = int(usage.get("cacheReadInputTokens", 0))
        cache_write = int(usage.get("cacheWriteInputTokens", 0))
        total = int(
            usage.get("totalTokens", input_tokens + output_tokens + cache_read + cache_write)
        )
        return cls(input_tokens, output_tokens, cache_read, cache_write, total)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, absent_is_zero: bool = False) -> TokenUsage:
        """Read the flat count fields of a wire dict (a usage event, a query row, a stored item).

        Every count must be present, unless `absent_is_zero`: then a missing or null count is
        zero (a SUM over no rows is NULL; a counter never added to is absent).
        """
        if absent_is_zero:
            return cls(**{name: int(record.get(name) or 0) for name in TOKEN_FIELDS})
        return cls(**{name: int(record[name]) for name in TOKEN_FIELDS})

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            **{name: getattr(self, name) + getattr(other, name) for name in TOKEN_FIELDS}
        )

    def __sub__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            **{name: getattr(self, name) - getattr(other, name) for name in TOKEN_FIELDS}
        )

    def as_dict(self) -> TokenCounts:
        """The counts as flat wire fields; every wire shape that carries tokens is built from it."""
        return TokenCounts(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens,
            cache_write_input_tokens=self.cache_write_input_tokens,
            total_tokens=self.total_tokens,
        )


NO_TOKENS = TokenUsage()


def new_event_id() -> str:
    """A fresh, globally unique event id (the dedupe key)."""
    return str(uuid.uuid4())


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with a `Z` suffix and millisecond precision."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """Inverse of `format_timestamp` (accepts any ISO-8601 form Python understands, with a zone).

    A timestamp without a zone is a ValueError: read as local time it would name another instant
    on every machine whose clock is not in UTC.
    """
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # an offset that moves year 1 or 9999 out of range
        raise ValueError("timestamp is out of range") from None


@dataclass(frozen=True)
class UsageEvent:
    """One metered model call (or a call refused before it reached the model)."""

    event_id: str
    timestamp: datetime
    tenant_id: str
    user_id: str
    model_id: str
    tokens: TokenUsage
    status: Status
    error_code: str | None
    latency_ms: int
    cost_usd: str
    price_version: str
    request_id: str
    stage: str
    request_count: int = 1

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if self.request_count < 1:
            raise ValueError("request_count must be at least 1")
        if self.timestamp.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware")

    def to_record(self) -> UsageEventRecord:
        """The event as its schema-v1 wire dict."""
        return UsageEventRecord(
            event_id=self.event_id,
            schema_version=SCHEMA_VERSION,
            timestamp=format_timestamp(self.timestamp),
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            model_id=self.model_id,
            **self.tokens.as_dict(),
            status=self.status,
            error_code=self.error_code,
            latency_ms=self.latency_ms,
            cost_usd=self.cost_usd,
            price_version=self.price_version,
            request_id=self.request_id,
            stage=self.stage,
            request_count=self.request_count,
        )

    def to_json_line(self) -> bytes:
        """The event as one newline-terminated JSON line (what Firehose receives)."""
        return (json.dumps(self.to_record(), separators=(",", ":")) + "\n").encode()
