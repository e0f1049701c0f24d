"""Parallel callers (threads standing in for Lambda instances) against shared DynamoDB counters.

moto's DynamoDB checks a condition and applies the update without a lock, so threads calling
it in-process (or through moto's threaded server) can both pass one condition. DynamoDB
applies writes to an item one at a time; a moto server that handles one request at a time
gives the same guarantee, which is what these tests run against.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from chalicelib.bedrock import ModelReply
from chalicelib.budgets.alerts import BudgetAlerts, InMemoryAlertPublisher
from chalicelib.budgets.dynamo import DynamoBudgetStore
from chalicelib.budgets.limits import estimate_input_tokens, worst_case
from chalicelib.budgets.plans import Plan
from chalicelib.budgets.service import BudgetService
from chalicelib.chat import ChatRequest, ChatService
from chalicelib.conversation import Conversation
from chalicelib.errors import RateLimitedError
from chalicelib.identity import Caller
from chalicelib.pricing import load_price_table
from chalicelib.settings import DEFAULT_MODEL_ID
from chalicelib.usage import TokenUsage, UsageEvent
from tests.functional.budgets.conftest import PLANS_TABLE, create_plans_table
from tests.support.tokens import REGION

PROMPT = "Summarize the plot of Hamlet."
MAX_TOKENS = 200
CALLERS = 30
NOW = datetime(2026, 11, 14, 12, 0, 5, tzinfo=UTC)


class QuietHandler(MotoRequestHandler):
    def log_request(self, *args: Any) -> None:
        pass


@pytest.fixture
def serial_moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto server on a free loopback port that handles one request at a time."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=False, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    dynamodb = boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint)
    create_plans_table(dynamodb)
    try:
        yield endpoint
    finally:
        dynamodb.delete_table(TableName=PLANS_TABLE)
        server.shutdown()
        thread.join()


class ExactModel:
    """Answers instantly-ish and bills exactly the worst case the budget reserved."""

    def converse(self, model_id: str, conversation: Conversation, max_tokens: int) -> ModelReply:
        threading.Event().wait(0.01)  # long enough for other callers to interleave
        input_tokens = estimate_input_tokens(conversation)
        usage = TokenUsage(input_tokens, max_tokens, total_tokens=input_tokens + max_tokens)
        return ModelReply(text="ok", usage=usage, stop_reason="max_tokens")


class ListRecorder:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent, *, deadline: float | None = None) -> str:
        self.events.append(event)
        return "firehose"


@dataclass
class Outcome:
    ok: int
    refused: list[RateLimitedError]


def run_callers(endpoint: str, plan: Plan, publisher: InMemoryAlertPublisher) -> Outcome:
    """CALLERS requests at once, each through its own client, store and service."""
    prices = load_price_table()
    recorder = ListRecorder()
    session = boto3.session.Session()
    clients = [
        session.client("dynamodb", region_name=REGION, endpoint_url=endpoint)
        for _ in range(CALLERS)
    ]
    seed = DynamoBudgetStore(PLANS_TABLE, client=clients[0])
    seed.put_plan("tenant-a", plan, updated_by="test", updated_at=NOW)
    start = threading.Barrier(CALLERS)

    def one_instance(index: int) -> RateLimitedError | None:
        store = DynamoBudgetStore(PLANS_TABLE, client=clients[index])
        budget = BudgetService(
            store=store,
            prices=prices,
            default_plan=plan,
            alerts=BudgetAlerts(store, publisher, now=lambda: NOW),
            reservation_ttl_s=900,
            default_max_tokens=MAX_TOKENS,
            now=lambda: NOW,
        )
        chat = ChatService(
            model=ExactModel(),
            recorder=recorder,
            prices=prices,
            model_id=DEFAULT_MODEL_ID,
            stage="test",
            budget=budget,
        )
        caller = Caller("tenant-a", "user-a", "user-a", frozenset())
        start.wait()
        try:
            chat.chat(caller, ChatRequest.from_prompt(PROMPT, MAX_TOKENS), "req")
        except RateLimitedError as exc:
            return exc
        return None

    with ThreadPoolExecutor(CALLERS) as pool:
        results = list(pool.map(one_instance, range(CALLERS)))
    refused = [r for r in results if r is not None]
    ok = [e for e in recorder.events if e.status == "ok"]
    assert len(ok) + len(refused) == CALLERS
    return Outcome(len(ok), refused)


def client(endpoint: str) -> Any:
    return boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint)


def one_request_usd() -> Decimal:
    price = load_price_table().price_of(DEFAULT_MODEL_ID)
    return worst_case(Conversation.from_prompt(PROMPT), MAX_TOKENS, price).usd


def test_concurrent_requests_never_settle_more_than_the_budget(serial_moto: str) -> None:
    each = one_request_usd()
    budget = each * Decimal("7.5")  # room for 7 requests, not 8
    plan = Plan(budget, 10_000_000, 1_000, (DEFAULT_MODEL_ID,))
    publisher = InMemoryAlertPublisher()

    outcome = run_callers(serial_moto, plan, publisher)

    month = DynamoBudgetStore(PLANS_TABLE, client=client(serial_moto)).get_month(
        "tenant-a", "2026-11"
    )
    assert outcome.ok == 7
    assert len(outcome.refused) == CALLERS - 7
    assert all(r.error_code == "BudgetExceeded" for r in outcome.refused)
    assert month.settled_usd == 7 * each <= budget
    assert month.committed_usd == month.settled_usd  # nothing left reserved
    assert month.open_reservations == 0
    assert month.requests == 7
    # Settles are serialized on the item, so each threshold was crossed by exactly one.
    thresholds = sorted(alert.percent for alert in publisher.sent)
    assert thresholds == sorted(set(thresholds))
    assert 50 in thresholds
    assert 80 in thresholds


def test_requests_per_minute_hold_across_parallel_callers(serial_moto: str) -> None:
    plan = Plan(Decimal(1000), 10_000_000, 10, (DEFAULT_MODEL_ID,))

    outcome = run_callers(serial_moto, plan, InMemoryAlertPublisher())

    assert outcome.ok == 10
    assert len(outcome.refused) == CALLERS - 10
    assert {r.error_code for r in outcome.refused} == {"RateLimited"}
    assert {r.retry_after_s for r in outcome.refused} == {55}


def test_tokens_per_minute_hold_across_parallel_callers(serial_moto: str) -> None:
    tokens_each = worst_case(
        Conversation.from_prompt(PROMPT), MAX_TOKENS, load_price_table().price_of(DEFAULT_MODEL_ID)
    )
    plan = Plan(Decimal(1000), tokens_each.tokens * 4 + 1, 1_000, (DEFAULT_MODEL_ID,))

    outcome = run_callers(serial_moto, plan, InMemoryAlertPublisher())

    assert outcome.ok == 4
    assert all("tokens per minute" in r.message for r in outcome.refused)
