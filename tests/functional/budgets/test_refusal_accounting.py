"""A tenant hammering the API while over its rate: every refusal counted, few records written.

1,000 refusals in a minute through POST /bedrock/chat; then the scheduled maintenance writes
the minute's aggregate, the partition job curates the day, and GET /usage counts them all.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from chalice.test import Client

from chalicelib import wiring
from chalicelib.refusals import aggregate_event_id
from tests.functional.budgets.conftest import BudgetEnv, budget_settings, chat, set_plan
from tests.functional.conftest import BUCKET, auth, stored_events
from tests.support.lake import Lake, create_catalog

REFUSALS = 1000
EVENTS_PER_MINUTE = 10  # REFUSAL_EVENTS_PER_MINUTE's default


def test_a_thousand_refusals_make_bounded_records_and_exact_failed_requests(
    client: Client, budget_env: BudgetEnv
) -> None:
    set_plan(client, "tenant-a", requests_per_minute=1)
    budget_env.bedrock.reply()
    assert chat(client).status_code == 200

    started = datetime.now(UTC)
    responses = [chat(client) for _ in range(REFUSALS)]

    assert {r.status_code for r in responses} == {429}
    ids = Counter(r.headers["X-Request-Id"] for r in responses)
    minutes = {
        started.strftime("%Y-%m-%dT%H:%M"),
        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M"),
    }
    aggregate_ids = {aggregate_event_id("tenant-a", "RateLimited", m, "test") for m in minutes}
    individual = [i for i in ids if i not in aggregate_ids]
    assert len(individual) <= EVENTS_PER_MINUTE * len(minutes)
    assert sum(ids[i] for i in aggregate_ids) == REFUSALS - len(individual)
    rejected = [e for e in stored_events() if e["status"] == "rejected"]
    assert sorted(e["event_id"] for e in rejected) == sorted(individual)

    # The maintenance job, once the minute is over, writes its aggregate.
    report = wiring.run_refusal_flush(budget_env.settings, datetime.now(UTC) + timedelta(minutes=3))
    assert report["refused_requests_folded"] == REFUSALS - len(individual)
    rejected = [e for e in stored_events() if e["status"] == "rejected"]
    assert len(rejected) <= (EVENTS_PER_MINUTE + 1) * len(minutes)
    assert sum(e.get("request_count", 1) for e in rejected) == REFUSALS
    assert {e["event_id"] for e in rejected} == set(ids)  # every X-Request-Id is an event
    assert (
        wiring.run_refusal_flush(budget_env.settings, datetime.now(UTC) + timedelta(minutes=3))[
            "refusal_aggregates"
        ]
        == 0
    )  # nothing left to write

    # Curated, then counted by GET /usage.
    create_catalog(BUCKET)
    today = started.date()
    Lake(BUCKET).run(today, now=datetime.now(UTC))
    wiring.override(settings=budget_settings(QUERY_ENGINE="duckdb"))
    usage = client.http.get(f"/usage?from={today}&to={today}", headers=auth("tenant-a"))
    assert usage.status_code == 200, usage.body
    totals = usage.json_body["totals"]
    assert (totals["requests"], totals["failed_requests"]) == (1, REFUSALS)
