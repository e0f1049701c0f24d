"""Budgets on the request path: plan lookup, reserve before the model call, settle after."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from chalicelib.budgets.alerts import AlertReason, BudgetAlert, BudgetAlerts
from chalicelib.budgets.limits import (
    MAX_OPEN_RESERVATIONS,
    Actual,
    Demand,
    MonthCounters,
    Refusal,
    Reservation,
    month_key,
    next_month_start,
    seconds_to_next_month,
    thresholds_crossed,
    thresholds_reached,
    window_key,
    worst_case,
)
from chalicelib.budgets.plans import Plan, model_allowed, money_text, usable_models
from chalicelib.budgets.store import BudgetStore, Refused, SettleResult, StoredPlan
from chalicelib.conversation import Conversation
from chalicelib.errors import (
    BudgetStoreUnavailableError,
    ModelNotAllowedError,
    RateLimitedError,
    RequestExceedsPlanError,
)
from chalicelib.pricing import PriceTable, format_usd
from chalicelib.usage import TokenUsage, format_timestamp

logger = logging.getLogger(__name__)

PlanSource = Literal["tenant", "default"]
Applied = Literal["applied", "not_open", "failed"]
RepairOutcome = Literal["settled", "released", "gone", "failed"]


@dataclass(frozen=True)
class Hold:
    """A granted reservation and the plan it was checked against (what settle needs)."""

    reservation: Reservation
    plan: Plan


@dataclass(frozen=True)
class PlanOverview:
    """A tenant's plan and its month-to-date counters."""

    tenant_id: str
    plan: Plan
    source: PlanSource
    stored: StoredPlan | None
    counters: MonthCounters
    price_version: str


# Longest a plan read on the request path is reused in one container: a plan change applies
# to every container within this time (DESIGN: "a plan change applies within 60 s").
MAX_PLAN_CACHE_TTL_S = 60
# Tenants whose plan one container remembers; past this the cache starts over.
PLAN_CACHE_ENTRIES = 10_000
INDEXED_MONTHS_ENTRIES = 10_000


class PlanCache:
    """Tenants' plans (or the absence of one) as last read, each kept for up to `ttl_s`.

    The request path reads a tenant's plan on every call; keeping it in the container saves
    one sequential DynamoDB round trip per request. A plan set through this container is
    seen at once; one set elsewhere within `ttl_s`.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 <= ttl_s <= MAX_PLAN_CACHE_TTL_S:
            raise ValueError(f"plan cache TTL must be between 0 and {MAX_PLAN_CACHE_TTL_S} s")
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._plans: dict[str, tuple[float, StoredPlan | None]] = {}

    def get(self, tenant_id: str) -> tuple[bool, StoredPlan | None]:
        """(found, plan): found is False when the tenant is not cached or its entry expired."""
        entry = self._plans.get(tenant_id)
        if entry is None or entry[0] <= self._clock():
            return False, None
        return True, entry[1]

    def put(self, tenant_id: str, stored: StoredPlan | None) -> None:
        if self._ttl_s <= 0:
            return
        with self._lock:
            if len(self._plans) >= PLAN_CACHE_ENTRIES:
                self._plans.clear()
            self._plans[tenant_id] = (self._clock() + self._ttl_s, stored)

    def forget(self, tenant_id: str) -> None:
        with self._lock:
            self._plans.pop(tenant_id, None)


def usd(amount: Decimal) -> str:
    """Dollars for messages: at least cents, more digits only where they matter."""
    return "$" + money_text(amount)


class BudgetService:
    """Enforces plans with the budget store; alerts on thresholds."""

    def __init__(
        self,
        *,
        store: BudgetStore,
        prices: PriceTable,
        default_plan: Plan,
        alerts: BudgetAlerts | None,
        reservation_ttl_s: int,
        default_max_tokens: int,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        plan_cache: PlanCache | None = None,
        background: Callable[[Callable[[], None]], object] | None = None,
        offered_models: Sequence[str] | None = None,
    ) -> None:
        self.store = store
        self.prices = prices
        self.default_plan = default_plan
        # The model ids the stage may call (Settings.stage_models); a plan allows some of
        # them. Default: the default plan's models.
        self.offered_models = tuple(offered_models or default_plan.allowed_models)
        self._offered = frozenset(self.offered_models)
        self.alerts = alerts
        self._reservation_ttl_s = reservation_ttl_s
        self._default_max_tokens = default_max_tokens
        self._now = now
        self._plan_cache = plan_cache
        # Runs work off the request's critical path (an executor's submit); inline if None.
        self._background = background
        self._indexed: set[tuple[str, str]] = set()

    # -- plans -----------------------------------------------------------------------------

    def plan_for(
        self, tenant_id: str, *, cached: bool = False
    ) -> tuple[Plan, PlanSource, StoredPlan | None]:
        """The tenant's plan, or the stage default when it has none.

        `cached`: as this container last read it, if within the plan cache's TTL (the request
        path). Otherwise read now, and remembered for the request path.
        """
        found, stored = (False, None)
        if cached and self._plan_cache is not None:
            found, stored = self._plan_cache.get(tenant_id)
        if not found:
            stored = self.store.get_plan(tenant_id)
            if self._plan_cache is not None:
                self._plan_cache.put(tenant_id, stored)
        if stored is None:
            return self.default_plan, "default", None
        return stored.plan, "tenant", stored

    def overview(self, tenant_id: str) -> PlanOverview:
        """The plan and this month's counters (as of now, in UTC)."""
        plan, source, stored = self.plan_for(tenant_id)
        counters = self.store.get_month(tenant_id, month_key(self._now()))
        return PlanOverview(tenant_id, plan, source, stored, counters, self.prices.version)

    def set_plan(self, tenant_id: str, plan: Plan, updated_by: str) -> PlanOverview:
        """Replace the tenant's plan; effective for the next request in this container, and
        within the plan cache's TTL in every other."""
        if self._plan_cache is not None:
            self._plan_cache.forget(tenant_id)
        self.store.put_plan(tenant_id, plan, updated_by=updated_by, updated_at=self._now())
        return self.overview(tenant_id)

    # -- the request path ------------------------------------------------------------------

    def reserve(
        self,
        *,
        tenant_id: str,
        model_id: str,
        conversation: Conversation,
        max_tokens: int,
        event_id: str,
        timestamp: datetime,
    ) -> Hold:
        """Hold the request's worst case (`model_id`'s prices), or refuse it before the model
        is called.

        Raises ModelNotAllowedError (403: the stage does not offer the model or the plan does
        not allow it), RequestExceedsPlanError (400), RateLimitedError (429) or
        BudgetStoreUnavailableError (503: fail closed). `model_id` must be priced.
        """
        now = self._now()
        plan, _, _ = self.plan_for(tenant_id, cached=True)
        if model_id not in self._offered or not model_allowed(plan, model_id, self.prices):
            raise self._not_allowed(plan, model_id)
        price = self.prices.price_of(model_id)
        demand = worst_case(conversation, max_tokens, price)
        if demand.tokens > plan.tokens_per_minute:
            raise RequestExceedsPlanError(
                f"This request may use up to {demand.tokens} tokens (input estimate plus "
                f"max_tokens) but your plan allows {plan.tokens_per_minute} tokens per minute. "
                "Lower max_tokens or shorten the prompt or conversation."
            )
        month = month_key(now)
        if demand.usd > plan.monthly_budget_usd:
            raise RateLimitedError(
                f"This request could cost up to {usd(demand.usd)}, more than your whole "
                f"monthly budget of {usd(plan.monthly_budget_usd)}. Lower max_tokens.",
                seconds_to_next_month(now),
                error_code="BudgetExceeded",
            )
        reservation = Reservation(
            tenant_id=tenant_id,
            month=month,
            reservation_id=event_id,
            usd=demand.usd,
            tokens=demand.tokens,
            window=window_key(now),
            expires_at=int(now.timestamp()) + self._reservation_ttl_s,
            event_timestamp=format_timestamp(timestamp),
        )
        result = self.store.reserve(reservation, plan.limits, now)
        if isinstance(result, Refused):
            if result.refusal.kind == "budget":
                self._alert_if_exhausted(result.counters, plan, conversation, max_tokens, model_id)
            raise self._refusal_error(result.refusal, result.counters, plan, demand, now)
        self._index(tenant_id, month)
        return Hold(result.reservation, plan)

    def settle(self, hold: Hold, tokens: TokenUsage, cost_usd: Decimal) -> SettleResult | None:
        """Replace the reservation by the actual cost; None if the store failed. Never raises.

        If the store fails, the reservation stays: the repair job settles it from the usage
        event once it expires (or releases it, if there is no event).
        """
        return self._settle(hold.reservation, Actual(cost_usd, tokens), hold.plan)[1]

    def release(self, hold: Hold, *, aborted: bool = False) -> None:
        """Give the whole reservation back (nothing was billed); never raises.

        `aborted`: the call was given up at its deadline; its worst case is counted as the
        provider's exposure (MonthCounters.aborted_usd).
        """
        self._apply(hold.reservation, None, hold.plan, aborted=aborted)

    def compensate(
        self, hold: Hold, settled: SettleResult | None, tokens: TokenUsage, cost_usd: Decimal
    ) -> None:
        """Leave the counters as if the call never happened, after its settle ran concurrently
        with a durable write that then failed (the caller gets 503, nothing is billed).

        `settled` is the settle's result, None if its outcome is unknown. Exactly once: the
        undo is conditional on the settle having applied and not being undone yet. Never
        raises; what cannot be done now is logged, and left to the repair job where it can.
        """
        actual = Actual(cost_usd, tokens)
        ids = {"reservation_id": hold.reservation.reservation_id}
        rate_corrected = False
        if settled is None:
            # Unknown: if the reservation is still open the settle never applied, and a
            # release finishes the job; if it is gone, the settle did apply.
            applied = self._apply(hold.reservation, None, hold.plan)
            if applied == "applied":
                return
            if applied == "failed":
                logger.error(
                    "budget counters may hold a call that was not recorded; "
                    "the repair job releases the reservation if it is still open",
                    extra=ids,
                )
                return
        elif not settled.applied:
            return
        else:
            rate_corrected = settled.rate_corrected
        try:
            self.store.unsettle(hold.reservation, actual, rate_corrected=rate_corrected)
        except BudgetStoreUnavailableError:
            logger.error(
                "budget counters hold a call that was not recorded (undo failed)",
                extra={**ids, "usd": format_usd(cost_usd)},
            )

    def index(self, tenant_id: str, at: datetime) -> None:
        """Make sure the tenant is in the index of `at`'s month (refused requests are counted
        per tenant, and the maintenance job finds their counters through it)."""
        self._index(tenant_id, month_key(at))

    def _index(self, tenant_id: str, month: str) -> None:
        """List the tenant in the month's index (what the repair job walks), once per
        container and month, off the critical path."""
        key = (tenant_id, month)
        if key in self._indexed:
            return

        def register() -> None:
            try:
                self.store.register_month(tenant_id, month)
            except BudgetStoreUnavailableError:
                # Harmless to defer: the next request in this container tries again.
                logger.warning("month index not written; next request retries")
                return
            if len(self._indexed) >= INDEXED_MONTHS_ENTRIES:
                self._indexed.clear()
            self._indexed.add(key)

        if self._background is None:
            register()
        else:
            self._background(register)

    def _apply(
        self,
        reservation: Reservation,
        actual: Actual | None,
        plan: Plan,
        *,
        aborted: bool = False,
    ) -> Applied:
        return self._settle(reservation, actual, plan, aborted=aborted)[0]

    def _settle(
        self,
        reservation: Reservation,
        actual: Actual | None,
        plan: Plan,
        *,
        aborted: bool = False,
    ) -> tuple[Applied, SettleResult | None]:
        action = "settle" if actual is not None else "release"
        try:
            result = self.store.settle(
                reservation, actual, current_window=window_key(self._now()), aborted=aborted
            )
        except BudgetStoreUnavailableError:
            logger.warning(
                f"budget {action} failed; the repair job will finish it",
                extra={
                    "reservation_id": reservation.reservation_id,
                    "reserved_usd": format_usd(reservation.usd),
                    "actual_usd": format_usd(actual.usd) if actual else "0",
                },
            )
            return "failed", None
        if not result.applied:
            logger.warning(
                f"budget {action}: reservation was no longer open",
                extra={"reservation_id": reservation.reservation_id},
            )
            return "not_open", result
        if actual is not None:
            before = result.settled_usd - actual.usd
            for percent in thresholds_crossed(before, result.settled_usd, plan.monthly_budget_usd):
                spent = MonthCounters(
                    reservation.tenant_id, reservation.month, settled_usd=result.settled_usd
                )
                self._send(spent, plan, percent, "spend")
        return "applied", result

    # -- repair ----------------------------------------------------------------------------

    def repair(self, reservation: Reservation, actual: Actual | None, plan: Plan) -> RepairOutcome:
        """Settle an expired reservation from its usage event, or release it if none exists."""
        applied = self._apply(reservation, actual, plan)
        if applied == "applied":
            return "settled" if actual is not None else "released"
        return "gone" if applied == "not_open" else "failed"

    def check_alerts(self, counters: MonthCounters, plan: Plan, *, catch_up: bool) -> int:
        """Retry alerts left pending; with `catch_up`, also send thresholds reached but never
        claimed (a claim that failed). Only the current month catches up: `plan` is today's,
        and a budget changed since must not raise alerts for a month that is over."""
        if self.alerts is None:
            return 0
        sent = self.alerts.retry_stale(counters, lambda p: self._alert(counters, plan, p, "spend"))
        if catch_up:
            for percent in thresholds_reached(counters.settled_usd, plan.monthly_budget_usd):
                if percent not in counters.alerts:
                    sent += self._send(counters, plan, percent, "spend")
        return sent

    # -- helpers ---------------------------------------------------------------------------

    def _not_allowed(self, plan: Plan, model_id: str) -> ModelNotAllowedError:
        usable = usable_models(plan, self.offered_models, self.prices)
        choice = (
            f"Models you may use: {', '.join(usable)}."
            if usable
            else "Your plan allows no model this service offers; ask your provider."
        )
        return ModelNotAllowedError(f"Your plan does not allow the model {model_id}. {choice}")

    def _alert_if_exhausted(
        self,
        counters: MonthCounters,
        plan: Plan,
        conversation: Conversation,
        max_tokens: int,
        model_id: str,
    ) -> None:
        """The 100% alert also goes out when what is left after settled spend cannot pay for a
        request of the stage's default size: spend seldom lands exactly on the budget, because
        each request must fit its worst case. Requests in flight do not count here, so a
        refusal caused only by them raises no alert."""
        if self.alerts is None or 100 in counters.alerts:
            return
        standard = min(max_tokens, self._default_max_tokens)
        needed = worst_case(conversation, standard, self.prices.price_of(model_id)).usd
        if plan.monthly_budget_usd - counters.settled_usd < needed:
            self._send(counters, plan, 100, "exhausted")

    def _send(self, counters: MonthCounters, plan: Plan, percent: int, reason: AlertReason) -> int:
        if self.alerts is None:
            return 0
        return int(self.alerts.send_once(self._alert(counters, plan, percent, reason)))

    @staticmethod
    def _alert(
        counters: MonthCounters, plan: Plan, percent: int, reason: AlertReason
    ) -> BudgetAlert:
        return BudgetAlert(
            tenant_id=counters.tenant_id,
            month=counters.month,
            percent=percent,
            monthly_budget_usd=plan.monthly_budget_usd,
            spent_usd=counters.settled_usd,
            reason=reason,
        )

    @staticmethod
    def _refusal_error(
        refusal: Refusal, counters: MonthCounters, plan: Plan, demand: Demand, now: datetime
    ) -> RateLimitedError:
        wait = refusal.retry_after_s
        if refusal.kind == "budget":
            remaining = counters.remaining_usd(plan.monthly_budget_usd)
            renews = next_month_start(now).strftime("%Y-%m-%d")
            return RateLimitedError(
                f"Monthly budget reached: this request could cost up to {usd(demand.usd)} and "
                f"{usd(remaining)} of your {usd(plan.monthly_budget_usd)} budget for "
                f"{counters.month} is left (including requests in flight). "
                f"The budget renews on {renews} (UTC).",
                wait,
                error_code="BudgetExceeded",
            )
        if refusal.kind == "requests_per_minute":
            message = (
                f"Rate limit reached: your plan allows {plan.requests_per_minute} requests "
                f"per minute. Retry in {wait} s."
            )
        elif refusal.kind == "tokens_per_minute":
            message = (
                f"Rate limit reached: your plan allows {plan.tokens_per_minute} tokens per "
                f"minute (each request counts its input estimate plus max_tokens until it "
                f"finishes). Retry in {wait} s."
            )
        else:
            message = (
                f"Too many requests in flight for your tenant (at most {MAX_OPEN_RESERVATIONS}). "
                "Retry shortly."
            )
        return RateLimitedError(message, wait, error_code="RateLimited")
