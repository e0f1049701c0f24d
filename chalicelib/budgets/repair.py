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

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws_errors import is_not_found
from chalicelib.budgets.limits import Actual, month_key, previous_month_key
from chalicelib.budgets.service import BudgetService
from chalicelib.errors import BudgetStoreUnavailableError, MeteringError
from chalicelib.layout import BucketLayout
from chalicelib.usage import TokenUsage, UsageEventRecord, parse_timestamp

logger = logging.getLogger(__name__)


class EventLookupError(MeteringError):
    """The usage events could not be read; try again on the next run."""


class UsageEventFinder(Protocol):
    """Finds usage events by id (S3UsageEventFinder in production)."""

    def find(self, wanted: Mapping[str, datetime]) -> dict[str, UsageEventRecord]:
        """Events among `wanted` (event id -> event timestamp) that exist; EventLookupError."""
        ...


class InMemoryUsageEventFinder:
    """A finder over a dict of events, for tests."""

    def __init__(self, events: Mapping[str, UsageEventRecord] | None = None) -> None:
        self.events = dict(events or {})
        self.failures = 0

    def find(self, wanted: Mapping[str, datetime]) -> dict[str, UsageEventRecord]:
        if self.failures > 0:
            self.failures -= 1
            raise EventLookupError("injected lookup failure")
        return {event_id: self.events[event_id] for event_id in wanted if event_id in self.events}


class S3UsageEventFinder:
    """Reads raw usage events from the analytics bucket.

    An event is in the fallback location under its own hour and id, or in a Firehose object
    under raw/ for the hour it arrived (its own hour or the next one). Each raw hour is read
    once per call, keeping only the events asked for.
    """

    def __init__(
        self, bucket: str, raw_prefix: str, fallback_prefix: str, client: Any = None
    ) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self._client = client
        self._bucket = bucket
        self._layout = BucketLayout(raw_prefix=raw_prefix, fallback_prefix=fallback_prefix)

    def find(self, wanted: Mapping[str, datetime]) -> dict[str, UsageEventRecord]:
        try:
            found = self._from_fallback(wanted)
            missing = {k: v for k, v in wanted.items() if k not in found}
            if missing:
                found.update(self._from_raw(missing))
        except (ClientError, BotoCoreError) as exc:
            raise EventLookupError(f"usage events unreadable: {type(exc).__name__}") from exc
        return found

    def _from_fallback(self, wanted: Mapping[str, datetime]) -> dict[str, UsageEventRecord]:
        found: dict[str, UsageEventRecord] = {}
        for event_id, timestamp in wanted.items():
            key = self._layout.fallback_key(event_id, timestamp)
            try:
                body = self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if is_not_found(exc):
                    continue
                raise
            found.update(_matching(body.splitlines(), {event_id}))
        return found

    def _from_raw(self, wanted: Mapping[str, datetime]) -> dict[str, UsageEventRecord]:
        hours = sorted({t + timedelta(hours=h) for t in wanted.values() for h in (0, 1)})
        prefixes = sorted({self._layout.raw_hour_prefix(hour) for hour in hours})
        remaining = set(wanted)
        found: dict[str, UsageEventRecord] = {}
        paginator = self._client.get_paginator("list_objects_v2")
        for prefix in prefixes:
            for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    body = self._client.get_object(Bucket=self._bucket, Key=obj["Key"])["Body"]
                    hits = _matching(body.iter_lines(), remaining)
                    found.update(hits)
                    remaining -= set(hits)
                    if not remaining:
                        return found
        return found


def _matching(lines: Any, wanted: set[str]) -> dict[str, UsageEventRecord]:
    hits: dict[str, UsageEventRecord] = {}
    for line in lines:
        if not line.strip() or not any(event_id.encode() in line for event_id in wanted):
            continue
        record = json.loads(line)
        if record.get("event_id") in wanted:
            hits[record["event_id"]] = record
    return hits


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

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def repair_budgets(
    now: datetime, *, service: BudgetService, finder: UsageEventFinder
) -> RepairReport:
    """Repair this month's and last month's counters as of `now` (the job's clock)."""
    totals = {"tenants": 0, "settled_from_events": 0, "released": 0, "alerts_sent": 0, "errors": 0}
    for month in (month_key(now), previous_month_key(now)):
        try:
            tenants = service.store.month_tenants(month)
        except BudgetStoreUnavailableError:
            totals["errors"] += 1
            continue
        for tenant_id in tenants:
            totals["tenants"] += 1
            try:
                for key, count in _repair_tenant(service, finder, tenant_id, month, now).items():
                    totals[key] += count
            except (BudgetStoreUnavailableError, EventLookupError) as exc:
                logger.warning(
                    "budget repair skipped a tenant; next run retries",
                    extra={"tenant_id": tenant_id, "month": month, "error": type(exc).__name__},
                )
                totals["errors"] += 1
    report = RepairReport(**totals)
    logger.info("budget repair finished", extra=report.as_dict())
    return report


def _repair_tenant(
    service: BudgetService,
    finder: UsageEventFinder,
    tenant_id: str,
    month: str,
    now: datetime,
) -> dict[str, int]:
    counts = {"settled_from_events": 0, "released": 0, "alerts_sent": 0}
    counters = service.store.get_month(tenant_id, month)
    expired = [r for r in counters.reservations if r.expires_at <= now.timestamp()]
    plan, _, _ = service.plan_for(tenant_id)
    if expired:
        events = finder.find(
            {r.reservation_id: parse_timestamp(r.event_timestamp) for r in expired}
        )
        for reservation in expired:
            event = events.get(reservation.reservation_id)
            actual = actual_from_event(event) if event is not None else None
            outcome = service.repair(reservation, actual, plan)
            if outcome == "settled":
                counts["settled_from_events"] += 1
            elif outcome == "released":
                counts["released"] += 1
            elif outcome == "failed":
                raise BudgetStoreUnavailableError("settle failed during repair")
        counters = service.store.get_month(tenant_id, month)
    catch_up = month == month_key(now)
    counts["alerts_sent"] += service.check_alerts(counters, plan, catch_up=catch_up)
    return counts
