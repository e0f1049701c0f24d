"""The budget store port: plans and month counters, with an in-memory fake beside it."""

from __future__ import annotations

import dataclasses
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from chalicelib.budgets.limits import (
    Actual,
    Demand,
    Limits,
    MonthCounters,
    Refusal,
    Reservation,
    refusal,
)
from chalicelib.budgets.plans import Plan
from chalicelib.errors import BudgetStoreUnavailableError


@dataclass(frozen=True)
class StoredPlan:
    """A plan as an administrator last set it."""

    plan: Plan
    updated_at: str
    updated_by: str


@dataclass(frozen=True)
class Reserved:
    """The reservation is held.

    `reservation` is what was stored: its window may be a later one than asked for, when
    another instance's clock had already opened it. Nothing else is read back: the request
    path needs no more, and a month item can hold up to MAX_OPEN_RESERVATIONS of them.
    """

    reservation: Reservation


@dataclass(frozen=True)
class Refused:
    """The reservation did not fit; `counters` are what it was checked against."""

    refusal: Refusal
    counters: MonthCounters


ReserveResult = Reserved | Refused


@dataclass(frozen=True)
class SettleResult:
    """`applied` is False when the reservation was no longer open (already settled/released).

    When applied: `settled_usd` is the month's settled spend after it (what alert thresholds
    are checked against), and `rate_corrected` says whether the rate window's token count was
    corrected to the actual tokens (only while the window is still the reservation's).
    """

    applied: bool
    settled_usd: Decimal = Decimal(0)
    rate_corrected: bool = False


class BudgetStore(Protocol):
    """Plans and real-time counters (chalicelib.budgets.dynamo.DynamoBudgetStore in production).

    Every method raises BudgetStoreUnavailableError when the store cannot answer.
    """

    def get_plan(self, tenant_id: str) -> StoredPlan | None: ...

    def put_plan(
        self, tenant_id: str, plan: Plan, *, updated_by: str, updated_at: datetime
    ) -> None: ...

    def get_month(self, tenant_id: str, month: str) -> MonthCounters: ...

    def reserve(self, reservation: Reservation, limits: Limits, now: datetime) -> ReserveResult:
        """Atomically check budget, rate and in-flight limits and hold the reservation."""
        ...

    def settle(
        self,
        reservation: Reservation,
        actual: Actual | None,
        *,
        current_window: str,
        aborted: bool = False,
    ) -> SettleResult:
        """Replace an open reservation by `actual` (or drop it when None), exactly once.

        `aborted` (with no `actual`): the call was given up at its deadline while the model
        may still have been generating; the reservation's worst case is added to the month's
        `aborted_usd` (the provider's exposure) instead of being billed.
        """
        ...

    def unsettle(self, reservation: Reservation, actual: Actual, *, rate_corrected: bool) -> bool:
        """Undo an applied settle of `actual`, exactly once: its spend, request and tokens
        leave the month's counters (and the rate window's tokens, if the settle corrected
        them), and a reservation of zero takes the settled one's place. The repair job
        releases it once it expires, or settles it if the usage event exists after all.

        False, changing nothing, if the reservation is open (the settle had not applied) or
        its zero stand-in is already there (undone before).
        """
        ...

    def register_month(self, tenant_id: str, month: str) -> None:
        """List the tenant among the month's active tenants (what the repair job walks)."""
        ...

    def month_tenants(self, month: str) -> list[str]: ...

    def claim_alert(
        self, tenant_id: str, month: str, percent: int, claim: str, replacing: str | None
    ) -> bool:
        """Set the threshold's marker to `claim` if it is `replacing` (None: if unset).

        Markers live on the month's counters, which its first reservation or register_month
        creates: on a month without counters nothing is claimed.
        """
        ...

    def mark_alert_sent(
        self, tenant_id: str, month: str, percent: int, claim: str, sent: str
    ) -> bool:
        """Turn our claim into `sent`, if the marker still holds our claim."""
        ...


def _unchecked(refused: Refusal, counters: MonthCounters, window: str) -> bool:
    """Whether DynamoDB's conditions let a refused demand through anyway.

    They test only counters that exist: a month's first reservation is not checked against the
    budget, nor a window's first against the rates. So a demand larger than a whole limit gets
    in there; BudgetService refuses such a request before it reserves.
    """
    if counters.rate_window is None:  # no reservation this month: no counters to check
        return True
    new_window = counters.rate_window < window
    return new_window and refused.kind in ("requests_per_minute", "tokens_per_minute")


class InMemoryBudgetStore:
    """A thread-safe in-memory BudgetStore with the same semantics, for tests and benchmarks.

    tests/functional/budgets/test_store_contract.py runs the same tests on it and on the
    DynamoDB store.

    `failures[method] = n` makes the next n calls of that method raise
    BudgetStoreUnavailableError, as a throttled or unreachable table would.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.plans: dict[str, StoredPlan] = {}
        self.months: dict[tuple[str, str], MonthCounters] = {}
        self.registered: dict[str, set[str]] = defaultdict(set)
        self.failures: dict[str, int] = {}
        self.calls: list[str] = []

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        if self.failures.get(method, 0) > 0:
            self.failures[method] -= 1
            raise BudgetStoreUnavailableError("injected budget store failure")

    def _month(self, tenant_id: str, month: str) -> MonthCounters:
        return self.months.get((tenant_id, month)) or MonthCounters(tenant_id, month)

    def get_plan(self, tenant_id: str) -> StoredPlan | None:
        with self._lock:
            self._enter("get_plan")
            return self.plans.get(tenant_id)

    def put_plan(
        self, tenant_id: str, plan: Plan, *, updated_by: str, updated_at: datetime
    ) -> None:
        with self._lock:
            self._enter("put_plan")
            self.plans[tenant_id] = StoredPlan(plan, updated_at.isoformat(), updated_by)

    def get_month(self, tenant_id: str, month: str) -> MonthCounters:
        with self._lock:
            self._enter("get_month")
            return self._month(tenant_id, month)

    def reserve(self, reservation: Reservation, limits: Limits, now: datetime) -> ReserveResult:
        with self._lock:
            self._enter("reserve")
            current = self._month(reservation.tenant_id, reservation.month)
            demand = Demand(reservation.tokens, reservation.usd)
            refused = refusal(current, limits, demand, reservation.window, now)
            if refused is not None and not _unchecked(refused, current, reservation.window):
                return Refused(refused, current)
            window = max(reservation.window, current.rate_window or reservation.window)
            held = dataclasses.replace(reservation, window=window)
            requests, tokens = current.window_usage(window)
            updated = dataclasses.replace(
                current,
                committed_usd=current.committed_usd + reservation.usd,
                reserved_usd=current.reserved_usd + reservation.usd,
                open_reservations=current.open_reservations + 1,
                rate_window=window,
                rate_requests=requests + 1,
                rate_tokens=tokens + reservation.tokens,
                # By expiry, as the DynamoDB store lists them (the repair job's order).
                reservations=tuple(
                    sorted((*current.reservations, held), key=lambda r: r.expires_at)
                ),
            )
            self.months[(reservation.tenant_id, reservation.month)] = updated
            return Reserved(held)

    def settle(
        self,
        reservation: Reservation,
        actual: Actual | None,
        *,
        current_window: str,
        aborted: bool = False,
    ) -> SettleResult:
        with self._lock:
            self._enter("settle")
            current = self._month(reservation.tenant_id, reservation.month)
            held = [
                r for r in current.reservations if r.reservation_id == reservation.reservation_id
            ]
            if not held:
                return SettleResult(False)
            used = actual or Actual(usd=Decimal(0))
            rate_tokens = current.rate_tokens
            corrected = current.rate_window == reservation.window == current_window
            if corrected:
                rate_tokens += used.tokens.total_tokens - reservation.tokens
            exposure = aborted and actual is None
            updated = dataclasses.replace(
                current,
                committed_usd=current.committed_usd - reservation.usd + used.usd,
                reserved_usd=current.reserved_usd - reservation.usd,
                settled_usd=current.settled_usd + used.usd,
                open_reservations=current.open_reservations - 1,
                requests=current.requests + (1 if actual else 0),
                tokens=current.tokens + used.tokens,
                rate_tokens=rate_tokens,
                aborted_usd=current.aborted_usd + (reservation.usd if exposure else 0),
                aborted_requests=current.aborted_requests + (1 if exposure else 0),
                reservations=tuple(
                    r
                    for r in current.reservations
                    if r.reservation_id != reservation.reservation_id
                ),
            )
            self.months[(reservation.tenant_id, reservation.month)] = updated
            return SettleResult(True, updated.settled_usd, corrected)

    def unsettle(self, reservation: Reservation, actual: Actual, *, rate_corrected: bool) -> bool:
        with self._lock:
            self._enter("unsettle")
            current = self._month(reservation.tenant_id, reservation.month)
            if any(r.reservation_id == reservation.reservation_id for r in current.reservations):
                return False
            zero = dataclasses.replace(reservation, usd=Decimal(0), tokens=0)
            rate_tokens = current.rate_tokens
            if rate_corrected and current.rate_window == reservation.window:
                rate_tokens -= actual.tokens.total_tokens
            updated = dataclasses.replace(
                current,
                committed_usd=current.committed_usd - actual.usd,
                settled_usd=current.settled_usd - actual.usd,
                open_reservations=current.open_reservations + 1,
                requests=current.requests - 1,
                tokens=current.tokens - actual.tokens,
                rate_tokens=rate_tokens,
                reservations=tuple(
                    sorted((*current.reservations, zero), key=lambda r: r.expires_at)
                ),
            )
            self.months[(reservation.tenant_id, reservation.month)] = updated
            return True

    def register_month(self, tenant_id: str, month: str) -> None:
        with self._lock:
            self._enter("register_month")
            self.registered[month].add(tenant_id)
            current = self._month(tenant_id, month)
            self.months[(tenant_id, month)] = dataclasses.replace(current, indexed=True)

    def month_tenants(self, month: str) -> list[str]:
        with self._lock:
            self._enter("month_tenants")
            return sorted(self.registered[month])

    def claim_alert(
        self, tenant_id: str, month: str, percent: int, claim: str, replacing: str | None
    ) -> bool:
        with self._lock:
            self._enter("claim_alert")
            if (tenant_id, month) not in self.months:
                return False  # DynamoDB's claim needs the month item to exist (attribute_exists)
            current = self._month(tenant_id, month)
            if current.alerts.get(percent) != replacing:
                return False
            alerts = {**current.alerts, percent: claim}
            self.months[(tenant_id, month)] = dataclasses.replace(current, alerts=alerts)
            return True

    def mark_alert_sent(
        self, tenant_id: str, month: str, percent: int, claim: str, sent: str
    ) -> bool:
        with self._lock:
            self._enter("mark_alert_sent")
            current = self._month(tenant_id, month)
            if current.alerts.get(percent) != claim:
                return False
            alerts = {**current.alerts, percent: sent}
            self.months[(tenant_id, month)] = dataclasses.replace(current, alerts=alerts)
            return True
