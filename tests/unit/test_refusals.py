"""Refusal accounting: every refusal counted, a bounded number of events per tenant-minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chalicelib.errors import UsageNotDurableError
from chalicelib.refusals import (
    FLUSH_AFTER_S,
    InMemoryRefusalCounter,
    RefusalAccounting,
    RefusalCount,
    aggregate_event,
    aggregate_event_id,
    flush_refusals,
)
from chalicelib.usage import NO_TOKENS, UsageEvent

MINUTE = datetime(2026, 11, 30, 12, 5, 0, tzinfo=UTC)
LATER = MINUTE + timedelta(seconds=60 + FLUSH_AFTER_S)


class ListRecorder:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []
        self.failures = 0

    def record(self, event: UsageEvent, *, deadline: float | None = None) -> str:
        if self.failures:
            self.failures -= 1
            raise UsageNotDurableError("down")
        self.events.append(event)
        return "firehose"


def refusal(number: int, *, reason: str = "RateLimited", at: datetime = MINUTE) -> UsageEvent:
    return UsageEvent(
        event_id=f"e{number}",
        timestamp=at + timedelta(seconds=number % 60),
        tenant_id="t",
        user_id="u",
        model_id="m",
        tokens=NO_TOKENS,
        status="rejected",
        error_code=reason,
        latency_ms=1,
        cost_usd="0",
        price_version="p",
        request_id=f"r{number}",
        stage="test",
    )


def accounting(counter: InMemoryRefusalCounter, recorder: ListRecorder) -> RefusalAccounting:
    return RefusalAccounting(counter=counter, recorder=recorder, events_per_minute=3, stage="test")


def flush(counter: InMemoryRefusalCounter, recorder: ListRecorder, now: datetime = LATER) -> int:
    report = flush_refusals(
        now, tenants=["t"], counter=counter, recorder=recorder, events_per_minute=3, stage="test"
    )
    return report.folded_requests


def test_the_first_refusals_get_events_and_the_rest_fold_into_one_aggregate() -> None:
    counter, recorder = InMemoryRefusalCounter(), ListRecorder()
    ids = [accounting(counter, recorder).record(refusal(n)) for n in range(1000)]

    assert ids[:3] == ["e0", "e1", "e2"]
    folded_id = aggregate_event_id("t", "RateLimited", "2026-11-30T12:05", "test")
    assert set(ids[3:]) == {folded_id}
    assert len(recorder.events) == 3
    assert flush(counter, recorder) == 997
    aggregate = recorder.events[-1]
    assert aggregate == aggregate_event(
        counter_snapshot("RateLimited", 1000), folded=997, stage="test"
    )
    assert (aggregate.event_id, aggregate.request_count, aggregate.status) == (
        folded_id,
        997,
        "rejected",
    )
    assert aggregate.timestamp == MINUTE
    assert sum(e.request_count for e in recorder.events) == 1000
    assert counter.counts == {}


def counter_snapshot(reason: str, refused: int) -> RefusalCount:
    return RefusalCount("t", reason, "2026-11-30T12:05", refused, "m", "p", refused)


def test_reasons_and_minutes_are_counted_apart() -> None:
    counter, recorder = InMemoryRefusalCounter(), ListRecorder()
    service = accounting(counter, recorder)
    for n in range(5):
        service.record(refusal(n, reason="RateLimited"))
        service.record(refusal(n, reason="BudgetExceeded"))
        service.record(refusal(n, at=MINUTE + timedelta(minutes=1)))
    assert len(recorder.events) == 9
    flush(counter, recorder, LATER + timedelta(minutes=1))
    assert sorted((e.error_code, e.request_count) for e in recorder.events[9:]) == [
        ("BudgetExceeded", 2),
        ("RateLimited", 2),
        ("RateLimited", 2),
    ]


def test_a_minute_is_flushed_only_once_it_is_long_over() -> None:
    counter, recorder = InMemoryRefusalCounter(), ListRecorder()
    for n in range(5):
        accounting(counter, recorder).record(refusal(n))
    assert flush(counter, recorder, MINUTE + timedelta(seconds=90)) == 0
    assert len(counter.counts) == 1
    assert flush(counter, recorder) == 2


def test_a_refusal_counted_after_the_count_was_frozen_gets_its_own_event() -> None:
    counter, recorder = InMemoryRefusalCounter(), ListRecorder()
    service = accounting(counter, recorder)
    for n in range(5):
        service.record(refusal(n))
    (count,) = counter.closed("t", "2026-11-30T12:06")
    assert counter.freeze(count)
    recorder.failures = 1  # the aggregate's write fails: the frozen counter stays
    assert flush(counter, recorder) == 0
    assert service.record(refusal(99)) == "e99"  # late (a clock behind): its own event
    assert flush(counter, recorder) == 2  # the frozen count, not the late one
    assert sum(e.request_count for e in recorder.events) == 6


def test_a_refusal_that_cannot_be_counted_gets_its_own_event() -> None:
    counter, recorder = InMemoryRefusalCounter(), ListRecorder()
    service = accounting(counter, recorder)
    for n in range(3):
        service.record(refusal(n))
    counter.failures = 1
    assert service.record(refusal(3)) == "e3"
    assert service.record(refusal(4)) != "e4"  # counted again: the 4th counted one folds
    flush(counter, recorder)
    assert sum(e.request_count for e in recorder.events) == 5


def test_a_refusal_whose_event_cannot_be_written_has_no_id() -> None:
    counter, recorder = InMemoryRefusalCounter(), ListRecorder()
    recorder.failures = 1
    assert accounting(counter, recorder).record(refusal(0)) is None
