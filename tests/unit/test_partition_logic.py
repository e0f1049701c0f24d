"""Partition maintenance, the pure parts: which hours, parsing, the day's rows, dedupe, buckets."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from chalicelib.analytics.dedupe import (
    NEW_RANK,
    bucket_count,
    bucket_of,
    first_copies,
    id_hashes,
    partition_rows,
    split_by_day,
    with_origin,
)
from chalicelib.analytics.parsing import parse_lines, parse_object
from chalicelib.analytics.sources import SourceManifest, SourceObject, in_window, source_hours
from tests.support.usage_events import event, ndjson

DAY = date(2025, 12, 7)


def parse(body: bytes, source_rank: int = 0, object_index: int = 0) -> tuple[pa.Table, int, int]:
    parsed = parse_object(body, "raw/x")
    table = with_origin(parsed.table, NEW_RANK, source_rank, object_index)
    return table, parsed.lines, len(parsed.poison)


def parse_events(body: bytes) -> tuple[pa.Table, int, list[tuple[int, str]], int]:
    parsed = parse_object(body, "raw/k")
    poison = [(line.line, line.reason) for line in parsed.poison]
    return parsed.table, parsed.lines, poison, len(poison)


def dedupe(table: pa.Table) -> tuple[pa.Table, int]:
    keep, dropped = first_copies(table)
    return table.take(keep), dropped


def test_a_day_reads_the_hour_before_its_24_hours_and_the_lateness_window() -> None:
    hours = source_hours(DAY, lateness_hours=2)
    assert len(hours) == 1 + 24 + 2
    assert hours[0] == datetime(2025, 12, 6, 23, tzinfo=UTC)
    assert hours[-1] == datetime(2025, 12, 8, 1, tzinfo=UTC)
    assert in_window(datetime(2025, 12, 8, 1, tzinfo=UTC), DAY, 2, 1)
    assert not in_window(datetime(2025, 12, 8, 2, tzinfo=UTC), DAY, 2, 1)
    assert not in_window(datetime(2025, 12, 6, 22, tzinfo=UTC), DAY, 2, 1)


def test_a_source_manifest_ignores_listing_order_but_sees_a_replaced_object() -> None:
    hour = datetime(2025, 12, 7, 1, tzinfo=UTC)
    objects = [SourceObject("raw", f"raw/k{i}", f'"e{i}"', 10, hour) for i in range(5)]
    shuffled = list(objects)
    random.Random(7).shuffle(shuffled)
    empty = SourceManifest("2025-12-07", ())
    assert empty.with_objects(objects) == empty.with_objects(shuffled)
    held = empty.with_objects(objects).identities()
    replaced = SourceObject("raw", "raw/k4", '"other"', 10, hour)
    assert replaced.identity not in held
    assert SourceManifest.from_bytes(empty.with_objects(objects).to_bytes()).identities() == held


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
        ({"cost_usd": 0.1}, "cost_usd: amount must be a decimal string"),
        ({"cost_usd": "0.0000000000001"}, "more than 12 decimal places"),
        ({"cost_usd": "NaN"}, "not a finite amount"),
        ({"timestamp": "2025-12-07T10:00:00"}, "no time zone"),
        ({"timestamp": "yesterday"}, "timestamp does not parse"),
    ],
)
def test_a_bad_line_is_left_out_with_its_reason_and_the_rest_is_kept(
    change: dict[str, object], reason: str
) -> None:
    bad = {**event(event_id="bad"), **change}
    body = ndjson([event(event_id="good")]) + json.dumps(bad).encode() + b"\n"
    table, lines, invalid, count = parse_events(body)
    assert table.column("event_id").to_pylist() == ["good"]
    assert (lines, count) == (2, 1)
    assert invalid[0][0] == 2
    assert reason in invalid[0][1]


def test_null_required_fields_are_caught_on_the_vectorised_path_too() -> None:
    body = ndjson([event(event_id="good"), {**event(event_id="bad"), "status": None}])
    table, _lines, invalid, count = parse_events(body)
    assert table.column("event_id").to_pylist() == ["good"]
    assert count == 1
    assert invalid[0] == (2, "status is missing")


def test_cost_stays_exact() -> None:
    for text, value in (
        ("0.000000000001", "1E-12"),
        ("1e-5", "0.00001"),
        ("0.10000000000000", "0.1"),
    ):
        (row,) = parse_lines(ndjson([event(cost_usd=text)]), "raw/k").table.to_pylist()
        assert row["cost_usd"] == Decimal(value)
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
    assert {day: rows.num_rows for day, rows in others.items()} == {
        date(2025, 12, 6): 1,
        date(2025, 12, 8): 1,
    }


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


def test_partition_rows_are_one_copy_each_ordered_by_tenant_then_time() -> None:
    later = event("a", at="2025-12-07T11:00:00.000Z", event_id="a2")
    table, _, _ = parse(
        ndjson([event("b", event_id="b1"), later, event("a", event_id="a1"), later])
    )
    rows, dropped = partition_rows(table)
    assert dropped == 1
    assert rows.column("event_id").to_pylist() == ["a1", "a2", "b1"]


def test_the_bucket_of_an_id_is_stable_and_spread() -> None:
    ids = [f"evt-{n}" for n in range(4000)]
    hashes = id_hashes(pa.array(ids)).tolist()
    assert hashes == id_hashes(pa.chunked_array([ids[:1000], ids[1000:]])).tolist()
    assert [bucket_of(i, 8) for i in ids[:50]] == [h % 8 for h in hashes[:50]]
    # Fixed values: the bucket is part of the stored layout, so the hash must never change.
    pinned = id_hashes(pa.array(["91ca3ed3-0000-4000-8000-000000000000", "a", "", "é"]))
    assert pinned.tolist() == [
        2479735936352261897,
        13931324786166313877,
        0,
        8283935743313657925,
    ]
    counts = [0] * 8
    for value in hashes:
        counts[value % 8] += 1
    assert min(counts) > 400  # about 500 each
    assert bucket_count(0, 100) == 1
    assert bucket_count(250, 100) == 4
    assert bucket_count(10, 100, at_least=8) == 8


def test_ids_of_one_length_hash_as_the_general_path_hashes_them() -> None:
    # Same-length ids (uuids) take a shortcut; one shorter id sends the same ids down the
    # general path, which must give the very same hashes.
    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(3000)]
    ids[5] = "91ca3ed3-0000-4000-8000-000000000000"
    shortcut = id_hashes(pa.array(ids)).tolist()
    general = id_hashes(pa.array([*ids, "x"])).tolist()[:-1]
    assert shortcut == general
    assert shortcut[5] == 2479735936352261897  # the pinned value above
    sliced = pa.array(["x", *ids[:10]]).slice(1)  # an offset into the buffers
    assert id_hashes(sliced).tolist() == shortcut[:10]


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
    table, _lines, invalid, count = parse_events(body)
    assert table.column("event_id").to_pylist() == ["good"]
    assert count == 1
    assert "request_count" in invalid[0][1]
