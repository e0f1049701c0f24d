"""Budgets on the real local stack: an operator sets a small budget with meterctl, the tenant
chats until it is spent, gets 429, and the alerts arrive on the SNS topic exactly once each."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.budgets.limits import worst_case
from chalicelib.conversation import Conversation
from chalicelib.pricing import load_price_table
from chalicelib.settings import DEFAULT_MODEL_ID
from local.running import RunningStack

pytestmark = pytest.mark.e2e

PROMPT = "Write a long story about a dragon who learns to fly."
MAX_TOKENS = 48
MAX_CALLS = 20
WAIT_S = 180


def subscribe_queue(stack: RunningStack, name: str) -> str:
    """An SQS queue subscribed to the budget-alerts topic (how an operator would listen)."""
    sqs, sns = stack.client("sqs"), stack.client("sns")
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=stack.outputs["AlertsTopicArn"], Protocol="sqs", Endpoint=queue_arn)
    return str(queue_url)


def drain(stack: RunningStack, queue_url: str) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    alerts = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if not batch:
            return alerts
        for message in batch:
            alerts.append(json.loads(json.loads(message["Body"])["Message"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def test_small_budget_is_spent_then_429_with_one_alert_per_threshold(
    local_stack: RunningStack,
) -> None:
    run = uuid.uuid4().hex[:8]
    tenant = f"budget-{run}"
    admin = local_stack.create_user(f"provider-{run}", f"ops-{run}", admin=True)
    user = local_stack.create_user(tenant, f"spender-{run}")
    queue_url = subscribe_queue(local_stack, f"budget-alerts-{run}")
    # Five worst cases: every refusal then comes after 80 % is spent, and leaves less than a
    # request needs, so the alerts are exactly 50, 80 and 100 (exhausted).
    each = worst_case(
        Conversation.from_prompt(PROMPT), MAX_TOKENS, load_price_table().price_of(DEFAULT_MODEL_ID)
    ).usd
    budget = (each * 5 + Decimal("0.000001")).quantize(Decimal("0.000001"))

    plan = json.loads(
        local_stack.meterctl(
            "plan", "set", "--tenant", tenant, "--budget", str(budget),
            "--token", admin, "--json",
        ).stdout
    )  # fmt: skip
    assert plan["plan"]["monthly_budget_usd"] == str(budget)

    statuses: list[int] = []
    refusal: tuple[Any, dict[str, str]] = ({}, {})
    for _ in range(MAX_CALLS):
        status, body, headers = local_stack.request(
            "POST", "/bedrock/chat", user, {"prompt": PROMPT, "max_tokens": MAX_TOKENS}
        )
        statuses.append(status)
        if status == 429:
            refusal = (body, headers)
            break
        assert status == 200, body
    assert statuses[-1] == 429, statuses
    body, headers = refusal
    assert "Monthly budget reached" in body["Message"]
    assert int(headers["Retry-After"]) > 0
    again, _, _ = local_stack.request(
        "POST", "/bedrock/chat", user, {"prompt": PROMPT, "max_tokens": MAX_TOKENS}
    )
    assert again == 429

    alerts = drain(local_stack, queue_url)
    assert [a["threshold_percent"] for a in alerts] == [50, 80, 100]
    assert {a["tenant_id"] for a in alerts} == {tenant}
    assert alerts[-1]["reason"] == "exhausted"

    mine = json.loads(local_stack.meterctl("plan", "mine", "--token", user, "--json").stdout)
    month = mine["month_to_date"]
    spent = Decimal(month["spent_usd"])
    billed = [
        e for e in local_stack.raw_events() if e["tenant_id"] == tenant and e["status"] == "ok"
    ]
    assert len(billed) == statuses.count(200) == month["requests"]
    assert spent == sum(Decimal(e["cost_usd"]) for e in billed)
    assert spent <= budget
    assert Decimal(month["remaining_usd"]) == budget - spent
    rejected = [
        e
        for e in local_stack.raw_events()
        if e["tenant_id"] == tenant and e["status"] == "rejected"
    ]
    assert {e["error_code"] for e in rejected} == {"BudgetExceeded"}
    assert len(rejected) == 2

    # The same cost shows in the tenant's usage report once the job loop has curated it.
    deadline = time.monotonic() + WAIT_S
    totals: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, report, _ = local_stack.request("GET", "/usage", user)
        assert status == 200, report
        totals = report["totals"]
        if totals["requests"] == len(billed):
            break
        time.sleep(1)
    assert Decimal(str(totals["cost_usd"])) == spent

    text = local_stack.meterctl("plan", "show", "--tenant", tenant, "--token", admin).stdout
    assert "alerts          50% sent" in text
    assert drain(local_stack, queue_url) == []  # nothing more, also after the repair job ran
