"""The repair job: a failed settle is finished from the usage event; a crash is released."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import boto3
from chalice.test import Client

from chalicelib import wiring
from chalicelib.budgets.dynamo import DynamoBudgetStore
from chalicelib.budgets.limits import MonthCounters
from chalicelib.conversation import Conversation
from chalicelib.wiring import budget_service, run_budget_repair
from tests.functional.budgets.conftest import PLANS_TABLE, BudgetEnv, chat, set_plan
from tests.functional.conftest import stored_events
from tests.support.faults import SettleFailingClient
from tests.support.tokens import REGION

TTL_S = 900


def counters(tenant_id: str = "tenant-a") -> MonthCounters:
    return DynamoBudgetStore(PLANS_TABLE).get_month(tenant_id, "2026-11")


def test_settle_failure_still_answers_and_records_then_repair_fixes_the_counter(
    client: Client, budget_env: BudgetEnv
) -> None:
    failing = SettleFailingClient()
    wiring.override(budget_store=DynamoBudgetStore(PLANS_TABLE, client=failing))
    budget_env.bedrock.reply(input_tokens=11, output_tokens=5)

    response = chat(client)

    assert response.status_code == 200
    assert failing.failed == 1
    (event,) = stored_events()
    assert (event["status"], event["cost_usd"]) == ("ok", "0.000009")
    stuck = counters()
    assert stuck.open_reservations == 1
    assert stuck.settled_usd == 0
    assert stuck.committed_usd == Decimal("0.0000965")  # the worst case is still held

    wiring.override(budget_store=DynamoBudgetStore(PLANS_TABLE))
    run_budget_repair(budget_env.settings, budget_env.clock() + timedelta(seconds=60))
    assert counters().open_reservations == 1  # not expired yet: the request might be running

    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )
    event["time"] = (budget_env.clock() + timedelta(seconds=TTL_S + 1)).isoformat()
    report = client.lambda_.invoke("repair_budget_counters", event).payload

    assert report["settled_from_events"] == 1
    fixed = counters()
    assert fixed.open_reservations == 0
    assert fixed.settled_usd == fixed.committed_usd == Decimal("0.000009")
    assert (fixed.requests, fixed.tokens.input_tokens, fixed.tokens.output_tokens) == (1, 11, 5)


def test_crashed_request_reservation_expires_and_is_released(
    client: Client, budget_env: BudgetEnv
) -> None:
    set_plan(client, "tenant-a", monthly_budget_usd="0.0001")
    service = budget_service(budget_env.settings)
    # A request that reserved and then died before it could record anything:
    service.reserve(
        tenant_id="tenant-a",
        model_id=budget_env.settings.model_id,
        conversation=Conversation.from_prompt("hi"),
        max_tokens=64,
        event_id="crashed-event",
        timestamp=budget_env.clock(),
    )
    assert chat(client).status_code == 429  # the held worst case leaves too little

    report = run_budget_repair(budget_env.settings, budget_env.clock() + timedelta(seconds=TTL_S))

    assert report["released"] == 1
    released = counters()
    assert (released.open_reservations, released.committed_usd, released.requests) == (0, 0, 0)
    budget_env.clock.advance(seconds=TTL_S)
    budget_env.bedrock.reply()
    assert chat(client).status_code == 200


def test_repair_runs_twice_without_double_counting(client: Client, budget_env: BudgetEnv) -> None:
    wiring.override(budget_store=DynamoBudgetStore(PLANS_TABLE, client=SettleFailingClient()))
    budget_env.bedrock.reply()
    chat(client)
    wiring.override(budget_store=DynamoBudgetStore(PLANS_TABLE))
    later = budget_env.clock() + timedelta(seconds=TTL_S + 1)

    first = run_budget_repair(budget_env.settings, later)
    second = run_budget_repair(budget_env.settings, later)

    assert (first["settled_from_events"], second["settled_from_events"]) == (1, 0)
    assert counters().settled_usd == Decimal("0.000009")


def test_event_in_the_fallback_location_is_found_too(client: Client, budget_env: BudgetEnv) -> None:
    wiring.override(budget_store=DynamoBudgetStore(PLANS_TABLE, client=SettleFailingClient()))
    budget_env.bedrock.reply()
    chat(client)
    (event,) = stored_events()
    # Move the event from Firehose's raw/ objects to where the recorder's fallback puts it.
    s3 = boto3.client("s3", region_name=REGION)
    bucket = budget_env.settings.analytics_bucket
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix="raw/")["Contents"]:
        s3.delete_object(Bucket=bucket, Key=obj["Key"])
    hour = event["timestamp"][:13].replace("-", "/").replace("T", "/")
    s3.put_object(
        Bucket=bucket, Key=f"fallback/{hour}/{event['event_id']}.json", Body=json.dumps(event)
    )
    wiring.override(budget_store=DynamoBudgetStore(PLANS_TABLE))

    report = run_budget_repair(budget_env.settings, budget_env.clock() + timedelta(seconds=TTL_S))

    assert report["settled_from_events"] == 1
    assert counters().settled_usd == Decimal("0.000009")
