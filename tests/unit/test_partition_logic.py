"""Partition maintenance, the pure parts: which hours, parsing, the day's rows, dedupe."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from chalicelib.analytics.partitions import (
    SourceObject,
    curated_table,
    dedupe,
    in_window,
    inputs_digest,
    parse_cost,
    parse_events,
    source_hours,
    split_by_day,
)
from chalicelib.analytics.schema import curated_arrow_schema
from chalicelib.usage import FIELDS
from tests.support.usage_events import event, ndjson

DAY = date(2025, 12, 7)


def parse(body: bytes, source_rank: int = 0, object_index: int = 0) -> tuple[pa.Table, int, int]:
    table, lines, _invalid, invalid_count = parse_events(
        body, key="raw/x", source_rank=source_rank, object_index=object_index
    )
    return table, lines, invalid_count


def test_a_day_reads_the_hour_before_its_24_hours_and_the_lateness_window() -> None:
    hours = source_hours(DAY, lateness_hours=2)
    assert len(hours) == 1 + 24 + 2
    assert hours[0] == datetime(2025, 12, 6, 23, tzinfo=UTC)
    assert hours[-1] == datetime(2025, 12, 8, 1, tzinfo=UTC)
    assert in_window(datetime(2025, 12, 8, 1, tzinfo=UTC), DAY, 2, 1)
    assert not in_window(datetime(2025, 12, 8, 2, tzinfo=UTC), DAY, 2, 1)
    assert not in_window(datetime(2025, 12, 6, 22, tzinfo=UTC), DAY, 2, 1)


def test_inputs_digest_ignores_listing_order_but_sees_a_replaced_object() -> None:
    hour = datetime(2025, 12, 7, 1, tzinfo=UTC)
    objects = [SourceObject("raw", f"raw/k{i}", f'"e{i}"', 10, hour) for i in range(5)]
    shuffled = list(objects)
    random.Random(7).shuffle(shuffled)
    assert inputs_digest(objects) == inputs_digest(shuffled)
    replaced = [*objects[:4], SourceObject("raw", "raw/k4", '"other"', 10, hour)]
    assert inputs_digest(replaced) != inputs_digest(objects)


def test_wellformed_objects_parse_the_same_vectorised_and_line_by_line() -> None:
    events = [event(at=f"2025-12-07T10:00:0{i}.000Z", event_id=f"e{i}") for i in range(3)]
    fast, lines, invalid = parse(ndjson(events))
    # One non-JSON line sends the whole object down the line-by-line path.
    slow, slow_lines, slow_invalid = parse(ndjson(events) + b"garbage\n")
    assert (lines, invalid, slow_lines, slow_invalid) == (3, 0, 4, 1)
    assert fast.to_pylist() == slow.to_pylist()


def test_blank_lines_are_skipped_and_unknown_fields_ignored() -> None:
    record = {**event(), "future_field": {"x": 1}}
    table, lines, invalid = parse(b"\n" + json.dumps(record).encode() + b"\n\n")
    assert (table.num_rows, lines, invalid) == (1, 1, 0)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tenant_id": None}, "tenant_id is missing"),
        ({"input_tokens": "10"}, "input_tokens must be an integer"),
        ({"input_tokens": True}, "input_tokens must be an integer"),
        ({"cost_usd": 0.1}, "cost_usd must be a decimal string"),
        ({"cost_usd": "0.0000000000001"}, "more than 12 decimal places"),
        ({"cost_usd": "NaN"}, "out of range"),
        ({"timestamp": "2025-12-07T10:00:00"}, "no time zone"),
        ({"timestamp": "yesterday"}, "not ISO-8601"),
    ],
)
def test_a_bad_line_is_left_out_with_its_reason_and_the_rest_is_kept(
    change: dict[str, object], reason: str
) -> None:
    bad = {**event(event_id="bad"), **change}
    body = ndjson([event(event_id="good")]) + json.dumps(bad).encode() + b"\n"
    table, lines, invalid, count = parse_events(body, key="raw/k", source_rank=0, object_index=0)
    assert table.column("event_id").to_pylist() == ["good"]
    assert (lines, count) == (2, 1)
    assert invalid[0].line == 2
    assert reason in invalid[0].reason


def test_null_required_fields_are_caught_on_the_vectorised_path_too() -> None:
    body = ndjson([event(event_id="good"), {**event(event_id="bad"), "status": None}])
    table, _lines, invalid, count = parse_events(body, key="raw/k", source_rank=0, object_index=0)
    assert table.column("event_id").to_pylist() == ["good"]
    assert count == 1
    assert invalid[0].reason == "status is missing"
    assert invalid[0].line == 2


def test_cost_stays_exact() -> None:
    assert parse_cost("0.000000000001") == Decimal("1E-12")
    assert parse_cost("1e-5") == Decimal("0.00001")
    costs = ["0.1", "0.2", "0.000000000001", "12345678901234567890.123456789012"]
    table, _, _ = parse(ndjson([event(cost_usd=c) for c in costs]))
    assert table.column("cost_usd").type == pa.decimal128(38, 12)
    assert sum(table.column("cost_usd").to_pylist()) == sum(Decimal(c) for c in costs)


def test_only_the_days_events_are_kept_and_the_others_are_counted() -> None:
    events = [
        event(at="2025-12-06T23:59:59.999Z"),
        event(at="2025-12-07T00:00:00.000Z"),
        event(at="2025-12-07T23:59:59.999Z"),
        event(at="2025-12-08T01:30:00.000+02:00"),  # 2025-12-07T23:30Z
        event(at="2025-12-08T00:00:00.000Z"),
    ]
    table, _, _ = parse(ndjson(events))
    on_day, others = split_by_day(table, DAY)
    assert on_day.num_rows == 3
    assert others == {date(2025, 12, 6): 1, date(2025, 12, 8): 1}


def test_dedupe_keeps_the_earliest_copy_whatever_the_read_order() -> None:
    first = event(event_id="dup", at="2025-12-07T10:00:00.000Z", input_tokens=1)
    later = {**first, "timestamp": "2025-12-07T10:00:05.000Z", "input_tokens": 2}
    fallback = {**first, "input_tokens": 3}  # same time, but from the fallback location
    unique = event(event_id="solo")
    chunks = [
        parse(ndjson([later, unique]), source_rank=0, object_index=1)[0],
        parse(ndjson([first]), source_rank=0, object_index=0)[0],
        parse(ndjson([fallback]), source_rank=1, object_index=2)[0],
    ]
    results = set()
    for seed in range(6):
        random.Random(seed).shuffle(chunks)
        kept, dropped = dedupe(pa.concat_tables(chunks))
        rows = {r["event_id"]: r["input_tokens"] for r in kept.to_pylist()}
        results.add((tuple(sorted(rows.items())), dropped))
    assert results == {((("dup", 1), ("solo", 10)), 2)}


def test_curated_rows_have_the_table_columns_then_the_partition_values() -> None:
    table, _, _ = parse(ndjson([event("b"), event("a")]))
    curated = curated_table(table, DAY)
    assert curated.schema == curated_arrow_schema()
    assert curated.column_names == [*FIELDS, "year", "month", "day"]
    assert curated.column("tenant_id").to_pylist() == ["a", "b"]
    for name, value in (("year", "2025"), ("month", "12"), ("day", "07")):
        assert set(curated.column(name).to_pylist()) == {value}


def test_request_count_defaults_to_one_and_an_aggregate_keeps_its_count() -> None:
    aggregate = {**event(event_id="agg", status="rejected"), "request_count": 37}
    body = ndjson([event(event_id="single"), aggregate])
    for payload in (body, body + b"garbage\n"):  # vectorised, then line by line
        table, _lines, _invalid = parse(payload)
        counts = dict(
            zip(
                table.column("event_id").to_pylist(),
                table.column("request_count").to_pylist(),
                strict=True,
            )
        )
        assert counts == {"single": 1, "agg": 37}


def test_a_request_count_below_one_is_not_an_event() -> None:
    body = ndjson([event(event_id="good"), {**event(event_id="bad"), "request_count": 0}])
    table, _lines, invalid, count = parse_events(body, key="raw/k", source_rank=0, object_index=0)
    assert table.column("event_id").to_pylist() == ["good"]
    assert count == 1
    assert "request_count" in invalid[0].reason
