"""Usage events (schema v1): one JSON line per model call, the unit of billing."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypedDict

SCHEMA_VERSION = 1

Status = Literal["ok", "error", "rejected", "aborted"]
STATUSES: tuple[Status, ...] = ("ok", "error", "rejected", "aborted")


class UsageEventRecord(TypedDict):
    """The wire shape of a usage event, as written to Firehose and read back by the jobs."""

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


# Column order of the curated table: the reference design's columns first.
FIELDS: tuple[str, ...] = tuple(UsageEventRecord.__annotations__)


@dataclass(frozen=True)
class TokenUsage:
    """Token counts as the model reported them."""

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


NO_TOKENS = TokenUsage()


def new_event_id() -> str:
    """A fresh, globally unique event id (the dedupe key)."""
    return str(uuid.uuid4())


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with a `Z` suffix and millisecond precision."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """Inverse of `format_timestamp` (accepts any ISO-8601 form Python understands)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


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

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if self.timestamp.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware")

    def to_record(self) -> UsageEventRecord:
        """The event as its schema-v1 wire dict."""
        tokens = self.tokens
        return UsageEventRecord(
            event_id=self.event_id,
            schema_version=SCHEMA_VERSION,
            timestamp=format_timestamp(self.timestamp),
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            model_id=self.model_id,
            input_tokens=tokens.input_tokens,
            output_tokens=tokens.output_tokens,
            cache_read_input_tokens=tokens.cache_read_input_tokens,
            cache_write_input_tokens=tokens.cache_write_input_tokens,
            total_tokens=tokens.total_tokens,
            status=self.status,
            error_code=self.error_code,
            latency_ms=self.latency_ms,
            cost_usd=self.cost_usd,
            price_version=self.price_version,
            request_id=self.request_id,
            stage=self.stage,
        )

    def to_json_line(self) -> bytes:
        """The event as one newline-terminated JSON line (what Firehose receives)."""
        return (json.dumps(self.to_record(), separators=(",", ":")) + "\n").encode()
