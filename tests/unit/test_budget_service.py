"""The budget service and repair job over the in-memory store: settle, repair, alerts."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.bedrock import ModelReply
from chalicelib.budgets.alerts import BudgetAlerts, InMemoryAlertPublisher
from chalicelib.budgets.plans import Plan
from chalicelib.budgets.repair import InMemoryUsageEventFinder, repair_budgets
from chalicelib.budgets.service import BudgetService, Hold, PlanCache
from chalicelib.budgets.store import InMemoryBudgetStore, StoredPlan
from chalicelib.chat import ChatRequest, ChatService
from chalicelib.conversation import Conversation
from chalicelib.errors import RateLimitedError, UsageNotDurableError
from chalicelib.identity import Caller
from chalicelib.pricing import load_price_table
from chalicelib.settings import DEFAULT_MODEL_ID
from chalicelib.usage import NO_TOKENS, TokenUsage, UsageEvent, UsageEventRecord

START = datetime(2026, 11, 14, 12, 0, 5, tzinfo=UTC)
PRICES = load_price_table()
WORST = Decimal("0.0000965")  # "hi", max_tokens 64
USED = TokenUsage(input_tokens=11, output_tokens=5, total_tokens=16)
USED_USD = Decimal("0.000009")


class Env:
    def __init__(self, budget: str = "0.0001") -> None:
        self.now = START
        self.store = InMemoryBudgetStore()
        self.publisher = InMemoryAlertPublisher()
        self.finder = InMemoryUsageEventFinder()
        plan = Plan(Decimal(budget), 100_000, 100, (DEFAULT_MODEL_ID,))
        self.store.plans["t"] = StoredPlan(plan, "", "test")
        self.service = BudgetService(
            store=self.store,
            prices=PRICES,
            default_plan=plan,
            alerts=BudgetAlerts(self.store, self.publisher, now=lambda: self.now),
            reservation_ttl_s=900,
            default_max_tokens=64,
            now=lambda: self.now,
        )

    def reserve(self, event_id: str = "e1", max_tokens: int = 64) -> Hold:
        return self.service.reserve(
            tenant_id="t",
            model_id=DEFAULT_MODEL_ID,
            conversation=Conversation.from_prompt("hi"),
            max_tokens=max_tokens,
            event_id=event_id,
            timestamp=self.now,
        )

    def month(self) -> Any:
        return self.store.months[("t", "2026-11")]

    def repair(self, after_s: int) -> dict[str, int]:
        return repair_budgets(
            self.now + timedelta(seconds=after_s), service=self.service, finder=self.finder
        ).as_dict()


def event_record(event_id: str, cost: str = "0.000009") -> UsageEventRecord:
    return UsageEventRecord(
        event_id=event_id,
        schema_version=1,
        timestamp="2026-11-14T12:00:05.000Z",
        tenant_id="t",
        user_id="u",
        model_id=DEFAULT_MODEL_ID,
        input_tokens=11,
        output_tokens=5,
        cache_read_input_tokens=0,
        cache_write_input_tokens=0,
        total_tokens=16,
        status="ok",
        error_code=None,
        latency_ms=10,
        cost_usd=cost,
        price_version=PRICES.version,
        request_id="r",
        stage="test",
    )


def test_reserve_then_settle_leaves_only_the_actual_cost() -> None:
    env = Env()
    hold = env.reserve()
    assert env.month().committed_usd == WORST
    env.service.settle(hold, USED, USED_USD)
    month = env.month()
    assert (month.committed_usd, month.settled_usd, month.reserved_usd) == (USED_USD, USED_USD, 0)
    assert month.rate_tokens == 16


def test_first_reservation_of_the_month_lists_the_tenant_for_repair() -> None:
    env = Env(budget="1")
    env.reserve()
    env.reserve("e2")
    assert env.store.registered["2026-11"] == {"t"}
    assert env.store.calls.count("register_month") == 1


def test_settle_failure_does_not_raise_and_keeps_the_reservation() -> None:
    env = Env()
    hold = env.reserve()
    env.store.failures["settle"] = 1
    env.service.settle(hold, USED, USED_USD)
    assert env.month().open_reservations == 1


def test_repair_settles_an_expired_reservation_from_its_usage_event() -> None:
    env = Env()
    env.reserve("e1")
    env.finder.events["e1"] = event_record("e1")
    assert env.repair(after_s=899)["settled_from_events"] == 0
    assert env.repair(after_s=900)["settled_from_events"] == 1
    assert (env.month().settled_usd, env.month().requests) == (USED_USD, 1)


def test_repair_releases_an_expired_reservation_with_no_event() -> None:
    env = Env()
    env.reserve("e1")
    assert env.repair(after_s=900)["released"] == 1
    assert (env.month().committed_usd, env.month().requests) == (0, 0)


def test_repair_keeps_reservations_while_events_cannot_be_read() -> None:
    env = Env()
    env.reserve("e1")
    env.finder.failures = 1
    report = env.repair(after_s=900)
    assert (report["errors"], report["released"]) == (1, 0)
    assert env.month().open_reservations == 1
    assert env.repair(after_s=900)["released"] == 1


def test_repair_looks_up_every_tenants_expired_events_in_one_pass() -> None:
    env = Env(budget="1")
    plan = Plan(Decimal("1"), 100_000, 100, (DEFAULT_MODEL_ID,))
    for tenant in ("t", "u", "v"):
        env.store.plans[tenant] = StoredPlan(plan, "", "test")
        for number in range(2):
            env.service.reserve(
                tenant_id=tenant,
                model_id=DEFAULT_MODEL_ID,
                conversation=Conversation.from_prompt("hi"),
                max_tokens=64,
                event_id=f"{tenant}-{number}",
                timestamp=env.now,
            )
        env.finder.events[f"{tenant}-0"] = event_record(f"{tenant}-0")
    report = env.repair(after_s=900)
    assert env.finder.calls == 1
    assert (report["tenants"], report["settled_from_events"], report["released"]) == (3, 3, 3)


def test_repair_covers_last_month_after_rollover() -> None:
    env = Env()
    env.now = datetime(2026, 11, 30, 23, 59, 50, tzinfo=UTC)
    env.reserve("late")
    assert env.repair(after_s=3600)["released"] == 1  # run in December


def test_thresholds_alert_once_even_with_repair_runs() -> None:
    env = Env(budget="0.0001")
    for i in range(10):
        env.service.settle(env.reserve(f"e{i}", max_tokens=1), USED, USED_USD)
    env.repair(after_s=3600)
    env.repair(after_s=7200)
    assert [a.percent for a in env.publisher.sent] == [50, 80]


def test_claim_failure_is_caught_up_by_the_repair_job() -> None:
    env = Env(budget="0.0001")
    for i in range(5):
        env.service.settle(env.reserve(f"e{i}", max_tokens=1), USED, USED_USD)
    env.store.failures["claim_alert"] = 1
    env.service.settle(env.reserve("e5", max_tokens=1), USED, USED_USD)  # crosses 50 %
    assert env.publisher.sent == []
    env.repair(after_s=60)
    assert [a.percent for a in env.publisher.sent] == [50]


def test_a_lowered_budget_raises_no_alerts_for_last_month() -> None:
    env = Env(budget="0.0001")
    for i in range(4):  # 36 % of the budget
        env.service.settle(env.reserve(f"e{i}", max_tokens=1), USED, USED_USD)
    lowered = Plan(Decimal("0.00004"), 100_000, 100, (DEFAULT_MODEL_ID,))
    env.store.plans["t"] = StoredPlan(lowered, "", "ops")
    env.now = datetime(2026, 12, 1, 0, 10, tzinfo=UTC)
    env.repair(after_s=0)
    assert env.publisher.sent == []


def test_failed_publish_is_retried_after_the_delay_exactly_once() -> None:
    env = Env(budget="0.0001")
    env.publisher.failures = 1
    for i in range(6):
        env.service.settle(env.reserve(f"e{i}", max_tokens=1), USED, USED_USD)
    assert env.month().alerts[50].startswith("pending ")
    env.repair(after_s=60)
    assert env.publisher.sent == []
    env.now += timedelta(minutes=3)
    env.repair(after_s=0)
    env.repair(after_s=600)
    assert [a.percent for a in env.publisher.sent] == [50]


def test_alert_published_but_not_marked_sent_is_resent_at_most_once_more() -> None:
    env = Env(budget="0.0001")
    env.store.failures["mark_alert_sent"] = 1
    for i in range(6):
        env.service.settle(env.reserve(f"e{i}", max_tokens=1), USED, USED_USD)
    env.now += timedelta(minutes=3)
    env.repair(after_s=0)
    env.repair(after_s=600)
    # The known at-least-once corner: same alert_id, so subscribers can drop the copy.
    assert [a.alert_id for a in env.publisher.sent] == ["t/2026-11/50", "t/2026-11/50"]


def test_budget_refusal_raises_the_100_percent_alert_only_when_exhausted() -> None:
    env = Env(budget="0.0001")
    with pytest.raises(RateLimitedError):
        env.reserve("big", max_tokens=70)  # 0.000104 > whole budget: not exhaustion
    hold = env.reserve("e1")
    with pytest.raises(RateLimitedError):
        env.reserve("e2")  # refused only because e1 holds its worst case
    assert env.publisher.sent == []
    env.service.settle(hold, USED, USED_USD)
    with pytest.raises(RateLimitedError) as refused:
        env.reserve("e3")  # 0.000091 left after spend: less than a request needs
    assert refused.value.error_code == "BudgetExceeded"
    assert [(a.percent, a.reason) for a in env.publisher.sent] == [(100, "exhausted")]
    with pytest.raises(RateLimitedError):
        env.reserve("e4")
    assert len(env.publisher.sent) == 1


class Model:
    def __init__(self) -> None:
        self.calls = 0

    def converse(self, model_id: str, conversation: Conversation, max_tokens: int) -> ModelReply:
        self.calls += 1
        return ModelReply("ok", USED, "end_turn")


class BrokenRecorder:
    def record(self, event: UsageEvent, *, deadline: float | None = None) -> str:
        raise UsageNotDurableError("nothing took it")


def chat_service(env: Env, recorder: Any) -> tuple[ChatService, Model]:
    model = Model()
    chat = ChatService(
        model=model,
        recorder=recorder,
        prices=PRICES,
        model_id=DEFAULT_MODEL_ID,
        stage="test",
        budget=env.service,
    )
    return chat, model


def test_refusal_is_still_429_when_the_rejected_event_cannot_be_recorded() -> None:
    env = Env(budget="0")
    chat, model = chat_service(env, BrokenRecorder())
    with pytest.raises(RateLimitedError) as refused:
        chat.chat(Caller("t", "u", "u", frozenset()), ChatRequest.from_prompt("hi", 64), "r")
    assert refused.value.event_id is None
    assert model.calls == 0


def test_usage_not_recorded_leaves_the_counters_as_if_the_call_never_happened() -> None:
    """The settle ran beside the failed write and was undone: nothing spent, nothing
    counted, and a reservation of zero is left for the repair job to release."""
    env = Env()
    chat, model = chat_service(env, BrokenRecorder())
    with pytest.raises(UsageNotDurableError):
        chat.chat(Caller("t", "u", "u", frozenset()), ChatRequest.from_prompt("hi", 64), "r")
    assert model.calls == 1
    month = env.month()
    assert (month.committed_usd, month.reserved_usd, month.settled_usd) == (0, 0, 0)
    assert (month.requests, month.tokens) == (0, NO_TOKENS)
    assert [(r.usd, r.tokens) for r in month.reservations] == [(0, 0)]

    env.now += timedelta(minutes=16)  # the zero reservation expires: no event, released
    repair_budgets(env.now, service=env.service, finder=env.finder)
    assert env.month() == dataclasses.replace(month, open_reservations=0, reservations=())


def test_the_request_path_reads_a_plan_once_per_cache_ttl() -> None:
    env = Env(budget="100")
    clock = [0.0]
    cache = PlanCache(60, clock=lambda: clock[0])
    env.service = BudgetService(
        store=env.store,
        prices=PRICES,
        default_plan=env.service.default_plan,
        alerts=None,
        reservation_ttl_s=900,
        default_max_tokens=64,
        now=lambda: env.now,
        plan_cache=cache,
    )
    for number in range(3):
        env.reserve(f"e{number}")
    assert env.store.calls.count("get_plan") == 1

    # Set elsewhere (another container): seen once the cached plan is 60 s old.
    blocked = Plan(Decimal(0), 100_000, 100, (DEFAULT_MODEL_ID,))
    env.store.plans["t"] = StoredPlan(blocked, "", "ops")
    env.reserve("e3")
    clock[0] += 60
    with pytest.raises(RateLimitedError):
        env.reserve("e4")

    # Set through this container: seen at once.
    env.service.set_plan("t", Plan(Decimal(100), 100_000, 100, (DEFAULT_MODEL_ID,)), "ops")
    env.reserve("e5")


def test_the_plan_cache_ttl_is_at_most_a_minute() -> None:
    with pytest.raises(ValueError, match="between 0 and 60"):
        PlanCache(61)


def test_usage_not_recorded_after_a_failed_settle_releases_the_reservation() -> None:
    """The settle's outcome is unknown (it failed): the reservation is still open, so the
    plain release finishes it and nothing is left for the repair job."""
    env = Env()
    env.store.failures["settle"] = 1
    chat, _ = chat_service(env, BrokenRecorder())
    with pytest.raises(UsageNotDurableError):
        chat.chat(Caller("t", "u", "u", frozenset()), ChatRequest.from_prompt("hi", 64), "r")
    month = env.month()
    assert (month.committed_usd, month.settled_usd, month.open_reservations) == (0, 0, 0)
    assert env.store.calls.count("unsettle") == 0
