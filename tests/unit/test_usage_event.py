"""Usage events: schema v1 on the wire."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from chalicelib.usage import (
    FIELDS,
    NO_TOKENS,
    TOKEN_FIELDS,
    TokenUsage,
    UsageEvent,
    format_timestamp,
    parse_timestamp,
)


def make_event(**overrides: object) -> UsageEvent:
    values: dict[str, object] = {
        "event_id": "e-1",
        "timestamp": datetime(2025, 12, 7, 13, 5, 9, 123456, tzinfo=UTC),
        "tenant_id": "tenant-a",
        "user_id": "user-1",
        "model_id": "anthropic.claude-3-haiku-20240307-v1:0",
        "tokens": TokenUsage(10, 20, 3, 4, 37),
        "status": "ok",
        "error_code": None,
        "latency_ms": 812,
        "cost_usd": "0.00002785",
        "price_version": "2026-11-27",
        "request_id": "req-1",
        "stage": "local",
    }
    values.update(overrides)
    return UsageEvent(**values)  # type: ignore[arg-type]


def test_json_line_is_one_newline_terminated_schema_v1_object() -> None:
    line = make_event().to_json_line()
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    record = json.loads(line)
    assert tuple(record) == FIELDS
    assert record["schema_version"] == 1
    assert record["timestamp"] == "2025-12-07T13:05:09.123Z"
    assert record["cost_usd"] == "0.00002785"
    assert (record["input_tokens"], record["output_tokens"]) == (10, 20)
    assert (record["cache_read_input_tokens"], record["cache_write_input_tokens"]) == (3, 4)
    assert record["total_tokens"] == 37


def test_timestamps_are_utc_with_z_whatever_the_input_zone() -> None:
    moment = datetime(2025, 12, 7, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert format_timestamp(moment) == "2025-12-08T04:30:00.000Z"
    assert parse_timestamp("2025-12-08T04:30:00.000Z") == moment


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="status"):
        make_event(status="maybe")


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        make_event(timestamp=datetime(2025, 1, 1))


def test_converse_usage_without_cache_fields_counts_zero_cache_tokens() -> None:
    usage = TokenUsage.from_converse({"inputTokens": 12, "outputTokens": 30, "totalTokens": 42})
    assert usage == TokenUsage(12, 30, 0, 0, 42)


def test_converse_usage_with_cache_fields_keeps_them() -> None:
    usage = TokenUsage.from_converse(
        {
            "inputTokens": 5,
            "outputTokens": 7,
            "cacheReadInputTokens": 100,
            "cacheWriteInputTokens": 50,
            "totalTokens": 162,
        }
    )
    assert usage == TokenUsage(5, 7, 100, 50, 162)


def test_token_usages_add_field_by_field() -> None:
    assert TokenUsage(1, 2, 3, 4, 10) + TokenUsage(10, 20, 30, 40, 100) == TokenUsage(
        11, 22, 33, 44, 110
    )
    assert TokenUsage(1, 2, 3, 4, 10) + NO_TOKENS == TokenUsage(1, 2, 3, 4, 10)


def test_token_usage_round_trips_through_its_flat_wire_fields() -> None:
    tokens = TokenUsage(10, 20, 3, 4, 37)
    assert tokens.as_dict() == {
        "input_tokens": 10,
        "output_tokens": 20,
        "cache_read_input_tokens": 3,
        "cache_write_input_tokens": 4,
        "total_tokens": 37,
    }
    assert tuple(tokens.as_dict()) == TOKEN_FIELDS
    assert TokenUsage.from_record(make_event(tokens=tokens).to_record()) == tokens


def test_a_record_missing_a_count_is_refused_unless_absent_means_zero() -> None:
    row = {"input_tokens": 5, "total_tokens": 5}
    with pytest.raises(KeyError):
        TokenUsage.from_record(row)
    assert TokenUsage.from_record(row, absent_is_zero=True) == TokenUsage(5, 0, 0, 0, 5)
    sums_over_no_rows = dict.fromkeys(TOKEN_FIELDS)
    assert TokenUsage.from_record(sums_over_no_rows, absent_is_zero=True) == NO_TOKENS


def test_an_event_stands_for_one_request_unless_it_aggregates_refusals() -> None:
    assert json.loads(make_event().to_json_line())["request_count"] == 1
    aggregate = make_event(status="rejected", error_code="RateLimited", request_count=40)
    assert json.loads(aggregate.to_json_line())["request_count"] == 40
    with pytest.raises(ValueError, match="request_count"):
        make_event(request_count=0)
