"""Refused chat requests: each one counted exactly, in a bounded number of usage events.

A tenant hammering the API while over its budget or rate would otherwise write one `rejected`
event per refusal. Instead, per tenant, reason (the event's error_code) and UTC minute:

- every refusal adds one to an atomic DynamoDB counter (exact across Lambda containers: a
  per-container count would be lost when a container is frozen or recycled);
- the first REFUSAL_EVENTS_PER_MINUTE refusals are recorded as their own `rejected` events,
  as before, each with its own X-Request-Id;
- the rest are folded into one aggregate `rejected` event whose `request_count` says how many
  refusals it stands for. Its event id is derived from tenant, reason, minute and stage, so
  a rewrite or a Firehose duplicate collapses in the dedupe by event id; the folded
  refusals' X-Request-Id is that id.

The aggregate is written by the scheduled budget maintenance (every 5 minutes), for minutes
that ended at least FLUSH_AFTER_S ago: it first freezes the count on the counter (a
conditional write: `flushed` = the count it saw), then records the event, then deletes the
counter. A refusal that arrives for a minute already frozen (a container whose clock runs
minutes behind) is recorded as its own event. `failed_requests` = the sum of `request_count`
over the rejected events, exact.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from chalicelib.errors import MeteringError
from chalicelib.usage import NO_TOKENS, UsageEvent, parse_timestamp

logger = logging.getLogger(__name__)

# A minute's aggregate is written once the minute has been over this long: longer than any
# request can run (its deadline), so no refusal of that minute is still being counted.
FLUSH_AFTER_S = 120
# How long a counter is kept if the maintenance job never flushes it (it then is lost).
COUNTER_RETENTION_S = 7 * 24 * 3600
MINUTE_FORMAT = "%Y-%m-%dT%H:%M"
# The aggregate event ids' namespace (uuid5): fixed, so every writer derives the same id.
AGGREGATE_NAMESPACE = uuid.UUID("5a0d1b6e-3f7c-4c1e-9a59-3c5e2f7d8b10")


class RefusalCounterUnavailableError(MeteringError):
    """The refusal counters could not be read or written."""


@dataclass(frozen=True)
class RefusalCount:
    """One tenant's refusals for one reason in one UTC minute."""

    tenant_id: str
    reason: str
    minute: str  # "2026-11-30T12:05"
    refused: int
    model_id: str
    price_version: str
    flushed: int | None = None  # the count frozen for the aggregate, once it is being written


class RefusalCounter(Protocol):
    """Counters per tenant, reason and minute (chalicelib.request_items in production).

    Every method raises RefusalCounterUnavailableError when the store cannot answer.
    """

    def count(
        self, tenant_id: str, reason: str, minute: str, *, model_id: str, price_version: str
    ) -> RefusalCount:
        """Add one refusal; the counter as it is after (one atomic write)."""
        ...

    def closed(self, tenant_id: str, before: str) -> list[RefusalCount]:
        """The tenant's counters of minutes before `before`."""
        ...

    def freeze(self, count: RefusalCount) -> bool:
        """Set `flushed` to the count seen, if it is still that count and not frozen yet."""
        ...

    def forget(self, count: RefusalCount) -> None:
        """Delete the counter (its aggregate is recorded)."""
        ...


class Recorder(Protocol):
    """Makes a usage event durable (chalicelib.recorder.UsageRecorder)."""

    def record(self, event: UsageEvent, *, deadline: float | None = None) -> str: ...


def minute_of(moment: datetime) -> str:
    """The UTC minute a refusal is counted in."""
    return moment.astimezone(UTC).strftime(MINUTE_FORMAT)


def aggregate_event_id(tenant_id: str, reason: str, minute: str, stage: str) -> str:
    """The event id of a tenant's aggregate for one reason and minute (the same everywhere)."""
    return str(uuid.uuid5(AGGREGATE_NAMESPACE, f"refused/{stage}/{tenant_id}/{reason}/{minute}"))


def aggregate_event(count: RefusalCount, folded: int, stage: str) -> UsageEvent:
    """The `rejected` event standing for `folded` refusals of one tenant, reason and minute.

    It has no user or request (it stands for many), zero tokens and cost, and the minute's
    start as its timestamp, so it lands in that day's partition.
    """
    return UsageEvent(
        event_id=aggregate_event_id(count.tenant_id, count.reason, count.minute, stage),
        timestamp=parse_timestamp(count.minute + ":00Z"),
        tenant_id=count.tenant_id,
        user_id="",
        model_id=count.model_id,
        tokens=NO_TOKENS,
        status="rejected",
        error_code=count.reason,
        latency_ms=0,
        cost_usd="0",
        price_version=count.price_version,
        request_id="",
        stage=stage,
        request_count=folded,
    )


class RefusalAccounting:
    """Counts each refusal and decides whether it gets an event of its own."""

    def __init__(
        self,
        *,
        counter: RefusalCounter,
        recorder: Recorder,
        events_per_minute: int,
        stage: str,
        index: Callable[[str, datetime], None] | None = None,
    ) -> None:
        self._counter = counter
        self._recorder = recorder
        self._events_per_minute = events_per_minute
        self._stage = stage
        # Lists the tenant among the month's tenants, where the maintenance job looks for
        # counters (BudgetService.index); once per container and month.
        self._index = index

    def record(self, event: UsageEvent, *, deadline: float | None = None) -> str | None:
        """Count the refused request `event` describes; the event id that stands for it in
        the usage data, or None if it could not be recorded (logged; never raises)."""
        reason = event.error_code or "Refused"
        minute = minute_of(event.timestamp)
        try:
            count = self._counter.count(
                event.tenant_id,
                reason,
                minute,
                model_id=event.model_id,
                price_version=event.price_version,
            )
        except RefusalCounterUnavailableError:
            count = None  # not counted: its own event keeps the total exact
        if self._index is not None:
            self._index(event.tenant_id, event.timestamp)
        if count is not None and count.flushed is None and count.refused > self._events_per_minute:
            return aggregate_event_id(event.tenant_id, reason, minute, self._stage)
        try:
            self._recorder.record(event, deadline=deadline)
        except Exception:
            logger.exception(
                "refusal usage event not recorded", extra={"usage_event": event.to_record()}
            )
            return None
        return event.event_id


@dataclass(frozen=True)
class FlushReport:
    """What one flush did."""

    minutes: int = 0
    aggregates: int = 0
    folded_requests: int = 0
    errors: int = 0


def flush_refusals(
    now: datetime,
    *,
    tenants: Iterable[str],
    counter: RefusalCounter,
    recorder: Recorder,
    events_per_minute: int,
    stage: str,
) -> FlushReport:
    """Write the aggregates of the closed minutes of `tenants` (the scheduled job)."""
    before = minute_of(now - timedelta(seconds=FLUSH_AFTER_S))
    totals = {"minutes": 0, "aggregates": 0, "folded_requests": 0, "errors": 0}
    for tenant_id in tenants:
        try:
            counts = counter.closed(tenant_id, before)
        except RefusalCounterUnavailableError:
            totals["errors"] += 1
            continue
        for count in counts:
            try:
                folded = _flush_one(count, counter, recorder, events_per_minute, stage)
            except (RefusalCounterUnavailableError, MeteringError) as exc:
                # The counter stays (frozen or not): the next run picks it up again.
                logger.warning(
                    "refusal aggregate not written; next run retries",
                    extra={"tenant_id": tenant_id, "minute": count.minute, "error": str(exc)},
                )
                totals["errors"] += 1
                continue
            if folded is None:
                continue
            totals["minutes"] += 1
            if folded:
                totals["aggregates"] += 1
                totals["folded_requests"] += folded
    return FlushReport(**totals)


def _flush_one(
    count: RefusalCount,
    counter: RefusalCounter,
    recorder: Recorder,
    events_per_minute: int,
    stage: str,
) -> int | None:
    """Freeze, record and forget one counter; how many refusals its aggregate holds (None
    if the count moved while freezing: the next run tries again)."""
    frozen = count.flushed
    if frozen is None:
        if not counter.freeze(count):
            return None
        frozen = count.refused
    folded = frozen - events_per_minute
    if folded > 0:
        recorder.record(aggregate_event(count, folded, stage))
    counter.forget(count)
    return max(folded, 0)


class InMemoryRefusalCounter:
    """A RefusalCounter in a dict, for tests."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], RefusalCount] = {}
        self.failures = 0

    def _enter(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise RefusalCounterUnavailableError("injected failure")

    def count(
        self, tenant_id: str, reason: str, minute: str, *, model_id: str, price_version: str
    ) -> RefusalCount:
        self._enter()
        key = (tenant_id, reason, minute)
        found = self.counts.get(key)
        if found is None:
            found = RefusalCount(tenant_id, reason, minute, 0, model_id, price_version)
        updated = RefusalCount(
            tenant_id,
            reason,
            minute,
            found.refused + 1,
            found.model_id,
            found.price_version,
            found.flushed,
        )
        self.counts[key] = updated
        return updated

    def closed(self, tenant_id: str, before: str) -> list[RefusalCount]:
        self._enter()
        return sorted(
            (c for c in self.counts.values() if c.tenant_id == tenant_id and c.minute < before),
            key=lambda c: (c.minute, c.reason),
        )

    def freeze(self, count: RefusalCount) -> bool:
        self._enter()
        key = (count.tenant_id, count.reason, count.minute)
        found = self.counts.get(key)
        if found is None or found.flushed is not None or found.refused != count.refused:
            return False
        self.counts[key] = RefusalCount(
            found.tenant_id,
            found.reason,
            found.minute,
            found.refused,
            found.model_id,
            found.price_version,
            found.refused,
        )
        return True

    def forget(self, count: RefusalCount) -> None:
        self._enter()
        self.counts.pop((count.tenant_id, count.reason, count.minute), None)
