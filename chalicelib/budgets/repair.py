"""The budget repair job: finish reservations that were never settled, retry missed alerts.

A reservation stays open when its request crashed (Lambda timeout, out of memory) or when
the settle write failed after the usage event was already durable. Once it has expired
(RESERVATION_TTL_S, longer than any request can run), the job looks for its usage event (the
reservation id is the event id) and settles the counters to the event's cost and tokens; with
no event, nothing was billed and the reservation is released. The settle is the same
conditional write the request uses, so a reservation is finished exactly once. If the event
store cannot be read, the reservation is left for the next run, never released blind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from chalicelib.analytics.lookup import EventLookupError, EventRef, Lookup
from chalicelib.budgets.limits import (
    Actual,
    MonthCounters,
    Reservation,
    month_key,
    previous_month_key,
)
from chalicelib.budgets.plans import Plan
from chalicelib.budgets.service import BudgetService
from chalicelib.errors import BudgetStoreUnavailableError
from chalicelib.usage import TokenUsage, UsageEventRecord, parse_timestamp

logger = logging.getLogger(__name__)

__all__ = ["EventLookupError", "EventRef", "InMemoryUsageEventFinder", "repair_budgets"]


class UsageEventFinder(Protocol):
    """Finds usage events by id (chalicelib.analytics.lookup.CuratedEventFinder in production)."""

    def find(self, refs: Sequence[EventRef]) -> Lookup:
        """The events among `refs` that exist, all tenants' at once; EventLookupError."""
        ...


class InMemoryUsageEventFinder:
    """A finder over a dict of events, for tests."""

    def __init__(self, events: Mapping[str, UsageEventRecord] | None = None) -> None:
        self.events = dict(events or {})
        self.failures = 0
        self.calls = 0

    def find(self, refs: Sequence[EventRef]) -> Lookup:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise EventLookupError("injected lookup failure")
        return Lookup(
            {r.event_id: self.events[r.event_id] for r in refs if r.event_id in self.events}
        )


def actual_from_event(event: UsageEventRecord) -> Actual:
    """What a usage event says the call used."""
    return Actual(usd=Decimal(event["cost_usd"]), tokens=TokenUsage.from_record(event))


@dataclass(frozen=True)
class RepairReport:
    """What one run did."""

    tenants: int = 0
    settled_from_events: int = 0
    released: int = 0
    alerts_sent: int = 0
    errors: int = 0
    malformed_lines: int = 0  # lines naming a wanted event that are not valid events

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Due:
    """A tenant's month with its expired reservations."""

    tenant_id: str
    month: str
    plan: Plan
    counters: MonthCounters
    expired: tuple[Reservation, ...]


def repair_budgets(
    now: datetime, *, service: BudgetService, finder: UsageEventFinder
) -> RepairReport:
    """Repair this month's and last month's counters as of `now` (the job's clock).

    Every tenant's expired reservations are looked up in one pass over the usage events; a
    tenant whose counters cannot be read, or whose events cannot be, is left for the next run.
    """
    totals = dict.fromkeys(RepairReport().as_dict(), 0)
    due: list[_Due] = []
    for month in (month_key(now), previous_month_key(now)):
        try:
            tenants = service.store.month_tenants(month)
        except BudgetStoreUnavailableError:
            totals["errors"] += 1
            continue
        for tenant_id in tenants:
            totals["tenants"] += 1
            try:
                counters = service.store.get_month(tenant_id, month)
                plan, _, _ = service.plan_for(tenant_id)
            except BudgetStoreUnavailableError:
                _skipped(tenant_id, month, "BudgetStoreUnavailableError")
                totals["errors"] += 1
                continue
            expired = tuple(r for r in counters.reservations if r.expires_at <= now.timestamp())
            due.append(_Due(tenant_id, month, plan, counters, expired))

    refs = [
        EventRef(r.reservation_id, item.tenant_id, parse_timestamp(r.event_timestamp))
        for item in due
        for r in item.expired
    ]
    events: dict[str, UsageEventRecord] | None = {}
    if refs:
        try:
            lookup = finder.find(refs)
            events = lookup.events
            totals["malformed_lines"] += lookup.malformed_lines
        except EventLookupError:
            events = None  # unreadable: no reservation is released blind
    for item in due:
        if item.expired and events is None:
            _skipped(item.tenant_id, item.month, "EventLookupError")
            totals["errors"] += 1
            continue
        try:
            for key, count in _repair_tenant(service, item, events or {}, now).items():
                totals[key] += count
        except BudgetStoreUnavailableError as exc:
            _skipped(item.tenant_id, item.month, type(exc).__name__)
            totals["errors"] += 1
    report = RepairReport(**totals)
    logger.info("budget repair finished", extra=report.as_dict())
    if report.malformed_lines:
        logger.error(
            "usage lines naming an expired reservation's event are not valid events; "
            "they were skipped (see the quarantine)",
            extra={"malformed_lines": report.malformed_lines},
        )
    return report


def _skipped(tenant_id: str, month: str, error: str) -> None:
    logger.warning(
        "budget repair skipped a tenant; next run retries",
        extra={"tenant_id": tenant_id, "month": month, "error": error},
    )


def _repair_tenant(
    service: BudgetService, item: _Due, events: Mapping[str, UsageEventRecord], now: datetime
) -> dict[str, int]:
    counts = {"settled_from_events": 0, "released": 0, "alerts_sent": 0}
    counters = item.counters
    if item.expired:
        for reservation in item.expired:
            event = events.get(reservation.reservation_id)
            actual = actual_from_event(event) if event is not None else None
            outcome = service.repair(reservation, actual, item.plan)
            if outcome == "settled":
                counts["settled_from_events"] += 1
            elif outcome == "released":
                counts["released"] += 1
            elif outcome == "failed":
                raise BudgetStoreUnavailableError("settle failed during repair")
        counters = service.store.get_month(item.tenant_id, item.month)
    catch_up = item.month == month_key(now)
    counts["alerts_sent"] += service.check_alerts(counters, item.plan, catch_up=catch_up)
    return counts
