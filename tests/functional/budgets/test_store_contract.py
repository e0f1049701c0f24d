"""The budget store contract: the in-memory fake and the DynamoDB store (on moto) agree."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.budgets.dynamo import DynamoBudgetStore
from chalicelib.budgets.limits import (
    MAX_OPEN_RESERVATIONS,
    Actual,
    Limits,
    MonthCounters,
    Reservation,
    month_key,
    seconds_to_next_minute,
    seconds_to_next_month,
    window_key,
)
from chalicelib.budgets.plans import Plan
from chalicelib.budgets.store import (
    BudgetStore,
    InMemoryBudgetStore,
    Refused,
    Reserved,
    SettleResult,
    StoredPlan,
)
from chalicelib.usage import NO_TOKENS, TokenUsage, format_timestamp
from tests.functional.budgets.conftest import PLANS_TABLE, create_plans_table

NOW = datetime(2026, 11, 14, 12, 0, 5, tzinfo=UTC)
NEXT_MINUTE = NOW + timedelta(minutes=1)
MONTH = month_key(NOW)
TENANT = "tenant-a"
LIMITS = Limits(Decimal("1.00"), tokens_per_minute=1000, requests_per_minute=3)
ROOMY = Limits(Decimal("1000"), tokens_per_minute=10**6, requests_per_minute=10**6)
USED = Actual(Decimal("0.000009"), TokenUsage(11, 5, 2, 3, 21))


@pytest.fixture
def memory_store() -> InMemoryBudgetStore:
    return InMemoryBudgetStore()


@pytest.fixture
def dynamo_store(aws: None) -> DynamoBudgetStore:
    create_plans_table()
    return DynamoBudgetStore(PLANS_TABLE)


@pytest.fixture(params=["memory_store", "dynamo_store"])
def store(request: pytest.FixtureRequest) -> BudgetStore:
    """Each test runs once on each store."""
    store: BudgetStore = request.getfixturevalue(request.param)
    return store


def hold(
    reservation_id: str,
    *,
    usd: str = "0.10",
    tokens: int = 100,
    at: datetime = NOW,
    ttl_s: int = 900,
    tenant_id: str = TENANT,
) -> Reservation:
    return Reservation(
        tenant_id=tenant_id,
        month=month_key(at),
        reservation_id=reservation_id,
        usd=Decimal(usd),
        tokens=tokens,
        window=window_key(at),
        expires_at=int(at.timestamp()) + ttl_s,
        event_timestamp=format_timestamp(at),
    )


def reserved(store: BudgetStore, reservation: Reservation, limits: Limits = LIMITS) -> Reserved:
    result = store.reserve(reservation, limits, NOW)
    assert isinstance(result, Reserved), result
    return result


def month(store: BudgetStore, tenant_id: str = TENANT) -> MonthCounters:
    return store.get_month(tenant_id, MONTH)


# -- plans -----------------------------------------------------------------------------------


def test_a_plan_is_stored_exactly_and_replaced_whole(store: BudgetStore) -> None:
    assert store.get_plan(TENANT) is None
    first = Plan(Decimal("25.50"), 20_000, 30, ("model-a", "model-b"))
    store.put_plan(TENANT, first, updated_by="ops", updated_at=NOW)
    assert store.get_plan(TENANT) == StoredPlan(first, NOW.isoformat(), "ops")

    second = Plan(Decimal("0.000001"), 1, 1, ("model-c",))
    store.put_plan(TENANT, second, updated_by="alice", updated_at=NEXT_MINUTE)
    assert store.get_plan(TENANT) == StoredPlan(second, NEXT_MINUTE.isoformat(), "alice")
    assert store.get_plan("tenant-b") is None


# -- reserve ---------------------------------------------------------------------------------


def test_an_untouched_month_has_zero_counters(store: BudgetStore) -> None:
    assert month(store) == MonthCounters(TENANT, MONTH)


def test_a_reservation_that_fits_is_held_and_counted(store: BudgetStore) -> None:
    wanted = hold("r1")
    result = reserved(store, wanted)
    assert result == Reserved(wanted)
    counters = month(store)
    assert (counters.committed_usd, counters.reserved_usd, counters.settled_usd) == (
        Decimal("0.10"),
        Decimal("0.10"),
        0,
    )
    assert (counters.open_reservations, counters.requests, counters.tokens) == (1, 0, NO_TOKENS)
    assert (counters.rate_window, counters.rate_requests, counters.rate_tokens) == (
        window_key(NOW),
        1,
        100,
    )
    assert counters.reservations == (wanted,)
    assert not counters.indexed


@pytest.mark.parametrize(
    ("admitted", "refused", "kind", "retry_after_s"),
    [
        (["0.60"], "0.41", "budget", seconds_to_next_month(NOW)),
        (["0.01", "0.01", "0.01"], "0.01", "requests_per_minute", seconds_to_next_minute(NOW)),
    ],
)
def test_a_reservation_over_budget_or_request_rate_is_refused_and_changes_nothing(
    store: BudgetStore, admitted: list[str], refused: str, kind: str, retry_after_s: int
) -> None:
    for number, usd in enumerate(admitted):
        reserved(store, hold(f"r{number}", usd=usd))
    before = month(store)
    result = store.reserve(hold("over", usd=refused), LIMITS, NOW)
    assert isinstance(result, Refused)
    assert (result.refusal.kind, result.refusal.retry_after_s) == (kind, retry_after_s)
    assert result.counters == before
    assert month(store) == before


def test_the_budget_counts_reservations_in_flight_up_to_the_cent(store: BudgetStore) -> None:
    reserved(store, hold("r1", usd="0.60"))
    reserved(store, hold("r2", usd="0.40"))  # exactly the budget
    assert month(store).committed_usd == Decimal("1.00")


def test_a_reservation_over_the_token_rate_is_refused(store: BudgetStore) -> None:
    reserved(store, hold("r1", tokens=600))
    reserved(store, hold("r2", tokens=400))  # exactly the limit
    result = store.reserve(hold("r3", tokens=1), LIMITS, NOW)
    assert isinstance(result, Refused)
    assert result.refusal.kind == "tokens_per_minute"
    assert month(store).rate_tokens == 1000


def test_in_flight_reservations_are_capped(store: BudgetStore) -> None:
    for number in range(MAX_OPEN_RESERVATIONS):
        reserved(store, hold(f"r{number}", usd="0.000001", tokens=1), ROOMY)
    result = store.reserve(hold("one-too-many", usd="0.000001", tokens=1), ROOMY, NOW)
    assert isinstance(result, Refused)
    assert (result.refusal.kind, result.refusal.retry_after_s) == ("in_flight", 1)
    assert month(store).open_reservations == MAX_OPEN_RESERVATIONS


def test_a_new_minute_opens_a_new_rate_window(store: BudgetStore) -> None:
    for number in range(LIMITS.requests_per_minute):
        reserved(store, hold(f"r{number}"))
    result = store.reserve(hold("later", tokens=70, at=NEXT_MINUTE), LIMITS, NEXT_MINUTE)
    assert isinstance(result, Reserved)
    counters = month(store)
    assert (counters.rate_window, counters.rate_requests, counters.rate_tokens) == (
        window_key(NEXT_MINUTE),
        1,
        70,
    )
    assert (counters.committed_usd, counters.open_reservations) == (Decimal("0.40"), 4)


def test_a_clock_behind_joins_the_newer_window(store: BudgetStore) -> None:
    reserved(store, hold("ahead", at=NEXT_MINUTE))
    result = store.reserve(hold("behind"), LIMITS, NOW)
    assert isinstance(result, Reserved)
    assert result.reservation.window == window_key(NEXT_MINUTE)
    assert (month(store).rate_requests, month(store).rate_tokens) == (2, 200)


def test_limits_are_checked_against_counters_already_there(store: BudgetStore) -> None:
    """A month's first reservation is not checked against the budget, nor a window's first
    against the rates (DynamoDB's conditions pass where an attribute is absent). A demand
    larger than a whole limit never reaches the store: BudgetService refuses it first."""
    assert isinstance(store.reserve(hold("huge", usd="1.01"), LIMITS, NOW), Reserved)
    again = store.reserve(hold("small", usd="0.01"), LIMITS, NOW)
    assert isinstance(again, Refused)
    assert again.refusal.kind == "budget"

    reserved(store, hold("first", tenant_id="tenant-b"))
    greedy = hold("greedy", tokens=1001, at=NEXT_MINUTE, tenant_id="tenant-b")
    assert isinstance(store.reserve(greedy, LIMITS, NEXT_MINUTE), Reserved)
    after = hold("after", tokens=1, at=NEXT_MINUTE, tenant_id="tenant-b")
    next_one = store.reserve(after, LIMITS, NEXT_MINUTE)
    assert isinstance(next_one, Refused)
    assert next_one.refusal.kind == "tokens_per_minute"


def test_reservations_are_listed_by_expiry(store: BudgetStore) -> None:
    late, early = hold("late", ttl_s=900), hold("early", ttl_s=300)
    reserved(store, late)
    reserved(store, early)
    assert month(store).reservations == (early, late)


def test_tenants_and_months_are_counted_apart(store: BudgetStore) -> None:
    reserved(store, hold("r1"))
    next_month = datetime(2026, 12, 1, tzinfo=UTC)
    store.reserve(hold("r2", at=next_month), LIMITS, next_month)
    assert month(store, "tenant-b") == MonthCounters("tenant-b", MONTH)
    assert month(store).open_reservations == 1
    assert store.get_month(TENANT, month_key(next_month)).open_reservations == 1


# -- settle and release ----------------------------------------------------------------------


def test_settle_replaces_the_reservation_by_what_was_used_exactly_once(store: BudgetStore) -> None:
    held = reserved(store, hold("r1")).reservation
    first = store.settle(held, USED, current_window=window_key(NOW))
    assert first == SettleResult(True, USED.usd, rate_corrected=True)
    counters = month(store)
    assert (counters.committed_usd, counters.reserved_usd, counters.settled_usd) == (
        USED.usd,
        0,
        USED.usd,
    )
    assert (counters.open_reservations, counters.requests, counters.tokens) == (0, 1, USED.tokens)
    assert counters.reservations == ()
    assert counters.rate_tokens == USED.tokens.total_tokens  # the estimate, corrected

    assert store.settle(held, USED, current_window=window_key(NOW)) == SettleResult(False)
    assert store.settle(held, None, current_window=window_key(NOW)) == SettleResult(False)
    assert month(store) == counters


def test_release_gives_the_whole_reservation_back_exactly_once(store: BudgetStore) -> None:
    held = reserved(store, hold("r1")).reservation
    released = store.settle(held, None, current_window=window_key(NOW))
    assert released == SettleResult(True, Decimal(0), rate_corrected=True)
    counters = month(store)
    assert (counters.committed_usd, counters.reserved_usd, counters.settled_usd) == (0, 0, 0)
    assert (counters.open_reservations, counters.requests, counters.tokens) == (0, 0, NO_TOKENS)
    assert (counters.rate_requests, counters.rate_tokens) == (1, 0)
    assert not store.settle(held, None, current_window=window_key(NOW)).applied
    assert not store.settle(held, USED, current_window=window_key(NOW)).applied
    assert month(store) == counters


def test_settling_what_was_never_reserved_changes_nothing(store: BudgetStore) -> None:
    result = store.settle(hold("ghost"), USED, current_window=window_key(NOW))
    assert result == SettleResult(False)
    assert month(store) == MonthCounters(TENANT, MONTH)
    reserved(store, hold("r1"))
    before = month(store)
    assert store.settle(hold("ghost"), USED, current_window=window_key(NOW)) == SettleResult(False)
    assert month(store) == before


def test_the_token_rate_is_corrected_only_in_the_reservation_s_window(
    store: BudgetStore,
) -> None:
    held = reserved(store, hold("r1")).reservation
    # The request finished a minute later: its old window no longer counts.
    settled = store.settle(held, USED, current_window=window_key(NEXT_MINUTE))
    assert settled == SettleResult(True, USED.usd, rate_corrected=False)
    counters = month(store)
    assert (counters.rate_window, counters.rate_tokens) == (window_key(NOW), 100)
    assert counters.tokens == USED.tokens


def test_a_settle_from_a_clock_behind_leaves_the_newer_window_alone(store: BudgetStore) -> None:
    old = reserved(store, hold("old")).reservation
    reserved(store, hold("new", tokens=70, at=NEXT_MINUTE))
    settled = store.settle(old, USED, current_window=window_key(NOW))
    assert settled == SettleResult(True, USED.usd, rate_corrected=False)
    counters = month(store)
    assert (counters.rate_window, counters.rate_tokens) == (window_key(NEXT_MINUTE), 70)
    assert counters.committed_usd == USED.usd + Decimal("0.10")


def test_an_aborted_call_is_released_and_its_worst_case_counted_as_exposure(
    store: BudgetStore,
) -> None:
    held = reserved(store, hold("r1", usd="0.25")).reservation
    released = store.settle(held, None, current_window=window_key(NOW), aborted=True)
    assert released.applied
    counters = month(store)
    assert (counters.committed_usd, counters.reserved_usd, counters.settled_usd) == (0, 0, 0)
    assert (counters.aborted_usd, counters.aborted_requests) == (Decimal("0.25"), 1)
    assert counters.requests == 0


# -- undoing a settle (its usage event could not be recorded) -------------------------------


def test_an_undone_settle_leaves_the_counters_as_if_released_with_a_zero_reservation(
    store: BudgetStore,
) -> None:
    reserved(store, hold("before", usd="0.30", tokens=40))
    before = month(store)
    held = reserved(store, hold("r1")).reservation
    settled = store.settle(held, USED, current_window=window_key(NOW))

    assert store.unsettle(held, USED, rate_corrected=settled.rate_corrected)

    zero = dataclasses.replace(held, usd=Decimal(0), tokens=0)
    assert month(store) == dataclasses.replace(
        before,
        open_reservations=2,
        rate_requests=2,  # a request counted in its minute, as a release leaves it
        reservations=tuple(sorted((*before.reservations, zero), key=lambda r: r.expires_at)),
    )


def test_an_undone_settle_leaves_a_newer_rate_window_alone(store: BudgetStore) -> None:
    held = reserved(store, hold("r1")).reservation
    reserved(store, hold("new", usd="0.01", tokens=7, at=NEXT_MINUTE))
    before = month(store)
    settled = store.settle(held, USED, current_window=window_key(NEXT_MINUTE))
    assert not settled.rate_corrected

    assert store.unsettle(held, USED, rate_corrected=settled.rate_corrected)

    zero = dataclasses.replace(held, usd=Decimal(0), tokens=0)
    assert month(store) == dataclasses.replace(
        before,
        committed_usd=Decimal("0.01"),
        reserved_usd=Decimal("0.01"),
        reservations=tuple(
            sorted(
                (zero, *(r for r in before.reservations if r.reservation_id != "r1")),
                key=lambda r: r.expires_at,
            )
        ),
    )


def test_a_settle_is_undone_exactly_once(store: BudgetStore) -> None:
    held = reserved(store, hold("r1")).reservation
    settled = store.settle(held, USED, current_window=window_key(NOW))
    assert store.unsettle(held, USED, rate_corrected=settled.rate_corrected)
    once = month(store)
    assert not store.unsettle(held, USED, rate_corrected=settled.rate_corrected)
    assert month(store) == once
    # The zero stand-in is released like any reservation (by the repair job), at zero.
    zero = dataclasses.replace(held, usd=Decimal(0), tokens=0)
    assert store.settle(zero, None, current_window=window_key(NOW)).applied
    assert month(store) == dataclasses.replace(once, open_reservations=0, reservations=())


def test_an_open_reservation_is_not_undone(store: BudgetStore) -> None:
    held = reserved(store, hold("r1")).reservation
    before = month(store)
    assert not store.unsettle(held, USED, rate_corrected=True)
    assert month(store) == before


# -- the month index -------------------------------------------------------------------------


def test_registered_tenants_are_listed_once_per_month_in_order(store: BudgetStore) -> None:
    assert store.month_tenants(MONTH) == []
    reserved(store, hold("r1", tenant_id="tenant-c"))  # counters alone do not list a tenant
    for tenant_id in ("tenant-b", "tenant-a", "tenant-b"):
        store.register_month(tenant_id, MONTH)
    assert store.month_tenants(MONTH) == ["tenant-a", "tenant-b"]
    assert store.month_tenants("2026-12") == []
    assert month(store, "tenant-a").indexed
    assert not month(store, "tenant-c").indexed


def test_registering_keeps_the_month_s_counters(store: BudgetStore) -> None:
    reserved(store, hold("r1"))
    before = month(store)
    store.register_month(TENANT, MONTH)
    assert month(store) == dataclasses.replace(before, indexed=True)


# -- alert markers ---------------------------------------------------------------------------


def test_an_alert_is_claimed_once_then_marked_sent_by_its_claimant(store: BudgetStore) -> None:
    reserved(store, hold("r1"))
    assert store.claim_alert(TENANT, MONTH, 50, "pending 1", replacing=None)
    assert not store.claim_alert(TENANT, MONTH, 50, "pending 2", replacing=None)
    assert not store.claim_alert(TENANT, MONTH, 50, "pending 2", replacing="pending 0")
    assert not store.mark_alert_sent(TENANT, MONTH, 50, "pending 0", "sent 0")
    assert store.mark_alert_sent(TENANT, MONTH, 50, "pending 1", "sent 1")
    assert month(store).alerts == {50: "sent 1"}


def test_a_stale_claim_is_taken_over_only_from_its_current_value(store: BudgetStore) -> None:
    reserved(store, hold("r1"))
    assert store.claim_alert(TENANT, MONTH, 80, "pending 1", replacing=None)
    assert store.claim_alert(TENANT, MONTH, 80, "pending 2", replacing="pending 1")
    assert not store.claim_alert(TENANT, MONTH, 80, "pending 3", replacing="pending 1")
    assert not store.mark_alert_sent(TENANT, MONTH, 80, "pending 1", "sent 1")
    assert store.claim_alert(TENANT, MONTH, 100, "pending 9", replacing=None)
    assert month(store).alerts == {80: "pending 2", 100: "pending 9"}


def test_no_alert_is_claimed_for_a_month_without_counters(store: BudgetStore) -> None:
    assert not store.claim_alert(TENANT, MONTH, 50, "pending 1", replacing=None)
    assert not store.mark_alert_sent(TENANT, MONTH, 50, "pending 1", "sent 1")
    assert month(store) == MonthCounters(TENANT, MONTH)
    store.register_month(TENANT, MONTH)  # an indexed month has an item to hold the marker
    assert store.claim_alert(TENANT, MONTH, 50, "pending 1", replacing=None)
