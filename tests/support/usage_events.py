"""Schema-v1 usage event records for analytics tests, and their newline-delimited form."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from chalicelib.usage import format_timestamp


def event(
    tenant_id: str = "tenant-a",
    at: datetime | str = "2025-12-07T10:00:00.000Z",
    *,
    event_id: str | None = None,
    status: str = "ok",
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_read: int = 0,
    cache_write: int = 0,
    cost_usd: str = "0.00000875",
    model_id: str = "anthropic.claude-3-haiku-20240307-v1:0",
) -> dict[str, Any]:
    """One usage event record as the chat path writes it."""
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "schema_version": 1,
        "timestamp": at if isinstance(at, str) else format_timestamp(at),
        "tenant_id": tenant_id,
        "user_id": f"user-{tenant_id}",
        "model_id": model_id,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_write_input_tokens": cache_write,
        "total_tokens": input_tokens + output_tokens + cache_read + cache_write,
        "status": status,
        "error_code": None if status == "ok" else "ModelErrorException",
        "latency_ms": 120,
        "cost_usd": cost_usd,
        "price_version": "2026-11-27",
        "request_id": str(uuid.uuid4()),
        "stage": "test",
    }


def ndjson(events: Iterable[dict[str, Any]]) -> bytes:
    """Events as Firehose stores them: one JSON object per line."""
    return b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)
