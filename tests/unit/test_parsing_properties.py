"""Properties of the raw-line parser: a valid event is never quarantined, garbage never crashes
the job's pure steps, and the vectorised path keeps exactly the lines the rule keeps."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.analytics.dedupe import (
    NEW_RANK,
    BucketSpill,
    partition_rows,
    spill_schema,
    split_by_day,
    with_origin,
)
from chalicelib.analytics.parsing import event_schema, parse_lines, parse_object
from chalicelib.usage import STATUSES, TokenUsage, UsageEvent

COUNTS = st.integers(min_value=0, max_value=2**63 - 1)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
IDS = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
COSTS = st.decimals(
    min_value=Decimal(0), max_value=Decimal("99999999999999"), places=12, allow_nan=False
)
MOMENTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
)


@st.composite
def valid_events(draw: st.DrawFn) -> UsageEvent:
    """Events as the chat path writes them, with every field anywhere in its valid range."""
    return UsageEvent(
        event_id=draw(IDS),
        timestamp=draw(MOMENTS),
        tenant_id=draw(TEXT),
        user_id=draw(TEXT),
        model_id=draw(TEXT),
        tokens=TokenUsage(*(draw(COUNTS) for _ in range(5))),
        status=draw(st.sampled_from(STATUSES)),
        error_code=draw(st.none() | TEXT),
        latency_ms=draw(COUNTS),
        cost_usd=format(draw(COSTS), "f"),
        price_version=draw(TEXT),
        request_id=draw(TEXT),
        stage=draw(TEXT),
        request_count=draw(st.integers(min_value=1, max_value=2**63 - 1)),
    )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=8,
)


@st.composite
def garbage_lines(draw: st.DrawFn) -> bytes:
    """Anything a broken writer, a bit flip or a hand edit could leave on a line."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=80)).replace(b"\n", b" ")
    if kind == 1:
        return json.dumps(draw(JSON_VALUES)).encode()
    base = draw(valid_events()).to_record()
    field = draw(st.sampled_from(sorted(base)))
    if kind == 2:
        base[field] = draw(JSON_VALUES)  # type: ignore[literal-required]
    else:
        del base[field]  # type: ignore[misc]
    return json.dumps(base).encode()


def line_of(event: UsageEvent) -> bytes:
    return event.to_json_line()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_events(), min_size=1, max_size=8))
def test_a_valid_event_is_never_quarantined(events: list[UsageEvent]) -> None:
    body = b"".join(line_of(event) for event in events)
    for parsed in (parse_object(body, "raw/k"), parse_lines(body, "raw/k")):
        assert parsed.poison == ()
        rows = parsed.table.to_pylist()
        assert [row["event_id"] for row in rows] == [event.event_id for event in events]
        for row, event in zip(rows, events, strict=True):
            assert row["cost_usd"] == Decimal(event.cost_usd)
            assert row["_ts"] == event.timestamp.replace(
                microsecond=event.timestamp.microsecond // 1000 * 1000
            )
            assert row["request_count"] == event.request_count
            assert row["total_tokens"] == event.tokens.total_tokens


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(valid_events().map(line_of), garbage_lines()), max_size=10))
def test_garbage_never_crashes_and_both_paths_keep_the_same_lines(lines: list[bytes]) -> None:
    body = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
    fast, slow = parse_object(body, "raw/k"), parse_lines(body, "raw/k")
    assert fast.table.to_pylist() == slow.table.to_pylist()
    assert [(p.line, p.reason) for p in fast.poison] == [(p.line, p.reason) for p in slow.poison]
    assert fast.table.num_rows + len(fast.poison) == fast.lines
    # The job's next steps take whatever survived, whatever it is.
    day = datetime(2025, 12, 7, tzinfo=UTC).date()
    on_day, _others = split_by_day(fast.table, day)
    with tempfile.TemporaryDirectory() as directory:
        spill = BucketSpill(directory, 4, spill_schema(event_schema()))
        spill.add(with_origin(fast.table, NEW_RANK, 0, 0))
        spill.add(with_origin(on_day, NEW_RANK, 0, 1))
        spill.close()
        for bucket in range(4):
            partition_rows(spill.read(bucket))


def test_a_day_boundary_event_keeps_its_own_day() -> None:
    last = UsageEvent(
        event_id="e",
        timestamp=datetime(2025, 12, 7, 23, 59, 59, 999_000, tzinfo=UTC),
        tenant_id="t",
        user_id="u",
        model_id="m",
        tokens=TokenUsage(),
        status="ok",
        error_code=None,
        latency_ms=0,
        cost_usd="0",
        price_version="p",
        request_id="r",
        stage="s",
    )
    table = parse_object(line_of(last), "raw/k").table
    on_day, others = split_by_day(table, (last.timestamp - timedelta(hours=1)).date())
    assert (on_day.num_rows, others) == (1, {})
