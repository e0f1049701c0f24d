"""Idempotency-Key on POST /bedrock/chat: a retried request gets the first answer, billed once.

Over HTTP through the Chalice test client on in-process moto, and, for requests racing each
other, through the chat service on a moto server whose DynamoDB writes are atomic (as on AWS;
in-process moto is not, under threads).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import wiring
from chalicelib.bedrock import ModelReply
from chalicelib.budgets.dynamo import DynamoBudgetStore
from chalicelib.chat import ChatRequest, ChatService, KeyUse
from chalicelib.conversation import Conversation
from chalicelib.errors import IdempotencyConflictError
from chalicelib.idempotency import Claimed, body_fingerprint, key_digest, new_record
from chalicelib.identity import Caller
from chalicelib.request_items import DynamoRequestItems
from chalicelib.settings import Settings, env_from_outputs
from chalicelib.usage import TokenUsage
from local.running import serialized_moto_server
from tests.functional.budgets.conftest import PLANS_TABLE, BudgetEnv, set_plan
from tests.functional.conftest import auth, stored_events

BODY = json.dumps({"prompt": "Please explain about AWS Lambda.", "max_tokens": 32})


def send(client: Client, key: str | None, body: str = BODY, tenant: str = "tenant-a") -> Any:
    headers = auth(tenant)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.http.post("/bedrock/chat", headers=headers, body=body)


def billed(tenant: str = "tenant-a") -> list[dict[str, Any]]:
    return [e for e in stored_events() if e["status"] == "ok" and e["tenant_id"] == tenant]


def spent(tenant: str = "tenant-a") -> Decimal:
    return DynamoBudgetStore(PLANS_TABLE).get_month(tenant, "2026-11").settled_usd


def test_a_repeated_key_gets_the_first_answer_without_a_model_call_or_billing(
    client: Client, budget_env: BudgetEnv
) -> None:
    budget_env.bedrock.reply("the first answer")
    first = send(client, "order-42")
    assert first.status_code == 200

    again = send(client, "order-42")

    assert again.status_code == first.status_code
    assert again.body == first.body
    assert again.headers["X-Request-Id"] == first.headers["X-Request-Id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(budget_env.bedrock.calls) == 1
    (event,) = billed()
    assert event["event_id"] == first.headers["X-Request-Id"]
    assert spent() == Decimal(event["cost_usd"])  # once


def test_the_same_key_with_another_body_is_422(client: Client, budget_env: BudgetEnv) -> None:
    budget_env.bedrock.reply()
    assert send(client, "k1").status_code == 200

    other = send(client, "k1", json.dumps({"prompt": "Something else"}))

    assert other.status_code == 422
    assert "different request body" in other.json_body["Message"]
    assert len(budget_env.bedrock.calls) == 1
    assert len(billed()) == 1


@pytest.mark.parametrize(
    "other",
    [
        {"messages": [{"role": "user", "content": "Please explain about AWS Lambda."}]},
        {"prompt": "Please explain about AWS Lambda.", "max_tokens": 32, "system": "Be brief."},
        {"prompt": "Please explain about AWS Lambda.", "max_tokens": 32, "model": "us.x"},
        {
            "messages": [
                {"role": "user", "content": "Hi."},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Please explain about AWS Lambda."},
            ]
        },
    ],
    ids=["as-messages", "with-system", "other-model", "longer-conversation"],
)
def test_the_key_covers_the_conversation_system_text_and_model(
    client: Client, budget_env: BudgetEnv, other: dict[str, Any]
) -> None:
    # The fingerprint is the body's bytes, so every field is in it: a retry must send the
    # same conversation to the same model to get the first answer.
    budget_env.bedrock.reply()
    assert send(client, "k2").status_code == 200

    assert send(client, "k2", json.dumps(other)).status_code == 422
    assert len(budget_env.bedrock.calls) == 1


def test_keys_are_per_tenant(client: Client, budget_env: BudgetEnv) -> None:
    budget_env.bedrock.reply("for a")
    budget_env.bedrock.reply("for b")
    a = send(client, "shared-key", tenant="tenant-a")
    b = send(client, "shared-key", tenant="tenant-b")
    assert (a.json_body, b.json_body) == ({"response": "for a"}, {"response": "for b"})
    assert a.headers["X-Request-Id"] != b.headers["X-Request-Id"]
    assert len(budget_env.bedrock.calls) == 2
    assert (len(billed("tenant-a")), len(billed("tenant-b"))) == (1, 1)


def test_calls_without_a_key_are_not_deduplicated(client: Client, budget_env: BudgetEnv) -> None:
    budget_env.bedrock.reply()
    budget_env.bedrock.reply()
    first, second = send(client, None), send(client, None)
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]
    assert len(billed()) == 2


def test_a_refusal_is_not_kept_as_the_answer(client: Client, budget_env: BudgetEnv) -> None:
    set_plan(client, "tenant-a", monthly_budget_usd="0.00001")  # less than one worst case
    assert send(client, "retry-me").status_code == 429

    set_plan(client, "tenant-a", monthly_budget_usd="100")
    budget_env.bedrock.reply("now it runs")
    again = send(client, "retry-me")

    assert again.status_code == 200
    assert again.json_body == {"response": "now it runs"}
    assert len(budget_env.bedrock.calls) == 1


def test_a_model_error_is_not_kept_as_the_answer(client: Client, budget_env: BudgetEnv) -> None:
    budget_env.bedrock.fail("ModelErrorException", 424)
    assert send(client, "k").status_code == 502
    budget_env.bedrock.reply("second try")
    assert send(client, "k").json_body == {"response": "second try"}


def claim_elsewhere(key: str, *, lease_s: float, body: str = BODY) -> None:
    """A claim of `key` by another request (another Lambda container), `lease_s` from now."""
    now = time.time()
    record = new_record(
        "tenant-a",
        key_digest(key),
        body_fingerprint(body.encode()),
        lease="another-request",
        lease_until=now + lease_s,
        now=now,
    )
    assert isinstance(DynamoRequestItems(PLANS_TABLE).claim(record, now), Claimed)


def test_the_same_key_while_the_first_call_runs_is_409_with_retry_after(
    client: Client, budget_env: BudgetEnv
) -> None:
    claim_elsewhere("busy", lease_s=20)
    response = send(client, "busy")
    assert response.status_code == 409
    assert response.headers["Retry-After"] == "2"
    assert "still being processed" in response.json_body["Message"]
    assert budget_env.bedrock.calls == []
    assert stored_events() == []


def test_a_key_left_by_a_request_that_died_is_taken_over_after_its_lease(
    client: Client, budget_env: BudgetEnv
) -> None:
    claim_elsewhere("orphan", lease_s=-1)  # its deadline passed: that request is gone
    budget_env.bedrock.reply("run again")
    response = send(client, "orphan")
    assert response.status_code == 200
    assert send(client, "orphan").headers["Idempotent-Replayed"] == "true"
    assert len(budget_env.bedrock.calls) == 1


def test_an_orphaned_key_still_belongs_to_its_first_body(
    client: Client, budget_env: BudgetEnv
) -> None:
    claim_elsewhere("orphan", lease_s=-1)
    assert send(client, "orphan", json.dumps({"prompt": "other"})).status_code == 422


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there", "new\nline"])
def test_a_malformed_key_is_400_before_anything_runs(
    client: Client, budget_env: BudgetEnv, key: str
) -> None:
    response = send(client, key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json_body["Message"]
    assert budget_env.bedrock.calls == []
    assert stored_events() == []


def test_the_longest_printable_key_is_accepted(client: Client, budget_env: BudgetEnv) -> None:
    budget_env.bedrock.reply()
    assert send(client, "~ !" + "k" * 252).status_code == 200


# -- requests racing each other, on a moto server with atomic conditional writes -------------


class SlowCountingModel:
    """Answers after a pause long enough for the other requests to arrive meanwhile."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def converse(self, model_id: str, conversation: Conversation, max_tokens: int) -> ModelReply:
        with self._lock:
            self.calls += 1
        threading.Event().wait(0.5)
        return ModelReply("slow answer", TokenUsage(40, 8, total_tokens=48), "end_turn")


@dataclass
class Served:
    endpoint: str
    settings: Settings


@pytest.fixture
def served(local_endpoint_env: None) -> Iterator[Served]:
    from local.provision import provision

    with serialized_moto_server() as endpoint:
        local = Settings.from_env({"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
        outputs = provision(
            stage="test", region="us-east-1", session=wiring.session(local), endpoint_url=endpoint
        )
        settings = Settings.from_env(
            {
                "STAGE": "test",
                "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": endpoint,
                **env_from_outputs(outputs),
            }
        )
        wiring.reset()
        yield Served(endpoint, settings)
        wiring.reset()


@pytest.fixture
def local_endpoint_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def test_four_parallel_sends_with_one_key_make_one_model_call_and_one_billed_event(
    served: Served,
) -> None:
    model = SlowCountingModel()
    wiring.override(model=model)
    service: ChatService = wiring.chat_service(served.settings)
    caller = Caller("tenant-a", "user-a", "alice", frozenset())
    raw = BODY.encode()
    key = KeyUse(key_digest("pay-once"), body_fingerprint(raw))
    request = ChatRequest.from_prompt("Please explain about AWS Lambda.", 32)
    start = threading.Barrier(4)

    def one(_: int) -> Any:
        start.wait()
        try:
            return service.chat(caller, request, "req", key=key)
        except IdempotencyConflictError as exc:
            return exc

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(one, range(4)))

    answers = [o for o in outcomes if not isinstance(o, Exception)]
    conflicts = [o for o in outcomes if isinstance(o, IdempotencyConflictError)]
    assert (len(answers), len(conflicts)) == (1, 3)
    assert {c.retry_after_s for c in conflicts} == {2}
    assert model.calls == 1

    replay = service.chat(caller, request, "req", key=key)
    assert (replay.status, replay.body, replay.event_id) == (
        answers[0].status,
        answers[0].body,
        answers[0].event_id,
    )
    assert replay.replayed
    assert model.calls == 1
    events = _raw_events(served)
    assert [e["event_id"] for e in events if e["status"] == "ok"] == [answers[0].event_id]
    month = wiring.budget_store(served.settings).get_month("tenant-a", events[0]["timestamp"][:7])
    assert month.requests == 1
    assert month.open_reservations == 0


def _raw_events(served: Served) -> list[dict[str, Any]]:
    s3 = wiring.client("s3", served.settings)
    bucket = served.settings.analytics_bucket
    events: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="raw/"):
        for obj in page.get("Contents", []):
            data = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            events.extend(json.loads(line) for line in data.splitlines() if line.strip())
    return events
