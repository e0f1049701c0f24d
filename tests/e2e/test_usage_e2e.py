"""Usage analytics on the real local stack: chat as two tenants, the job loop curates the
events, GET /usage shows each tenant exactly its own, and the reference queries agree."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest

from local.running import RunningStack
from tests.support.reference_queries import for_day

pytestmark = pytest.mark.e2e

WAIT_S = 180


def chat(stack: RunningStack, token: str) -> None:
    status, body, _ = stack.request(
        "POST", "/bedrock/chat", token, {"prompt": "Say hi.", "max_tokens": 8}
    )
    assert status == 200, body


def expected(stack: RunningStack, tenants: set[str]) -> dict[str, dict[str, int]]:
    """Counts per tenant from the raw usage events (what the curated table must hold)."""
    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    seen: set[str] = set()
    for record in stack.raw_events():
        if record["tenant_id"] not in tenants or record["event_id"] in seen:
            continue
        seen.add(record["event_id"])
        counts = sums[record["tenant_id"]]
        counts["requests" if record["status"] == "ok" else "failed_requests"] += 1
        for name in ("input_tokens", "output_tokens", "total_tokens"):
            counts[name] += record[name]
    return {tenant: dict(counts) for tenant, counts in sums.items()}


def sql_rows(stack: RunningStack, sql: str) -> list[dict[str, Any]]:
    output = stack.meterctl("sql", "--format", "json", sql).stdout
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_each_tenant_sees_its_own_usage_after_a_job_interval_and_sql_agrees(
    local_stack: RunningStack,
) -> None:
    run = uuid.uuid4().hex[:8]
    tenant_a, tenant_b = f"usage-a-{run}", f"usage-b-{run}"
    token_a = local_stack.create_user(tenant_a, f"ua-{run}")
    token_b = local_stack.create_user(tenant_b, f"ub-{run}")
    admin = local_stack.create_user(f"provider-{run}", f"admin-{run}", admin=True)
    today = datetime.now(UTC).date()
    chat(local_stack, token_a)
    chat(local_stack, token_a)
    chat(local_stack, token_b)
    want = expected(local_stack, {tenant_a, tenant_b})
    assert want[tenant_a]["requests"] == 2
    assert want[tenant_b]["requests"] == 1

    reports: dict[str, Any] = {}
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for tenant, token in ((tenant_a, token_a), (tenant_b, token_b)):
            status, body, _ = local_stack.request("GET", f"/usage?tenant_id={tenant_a}", token)
            assert status == 200, body
            reports[tenant] = body
        if all(reports[t]["totals"]["requests"] == want[t]["requests"] for t in want):
            break
        time.sleep(1)
    for tenant in (tenant_a, tenant_b):
        report = reports[tenant]
        assert report["tenant_id"] == tenant  # the query string's tenant_id is ignored
        totals = report["totals"]
        assert {name: totals[name] for name in want[tenant]} == want[tenant]
        assert totals["failed_requests"] == 0
        assert [day["date"] for day in report["days"]] == [today.isoformat()]
        assert float(totals["cost_usd"]) > 0

    status, _, _ = local_stack.request("GET", "/admin/usage", token_a)
    assert status == 403
    status, body, _ = local_stack.request("GET", f"/admin/usage?tenant_id={tenant_b}", admin)
    assert status == 200
    assert [t["tenant_id"] for t in body["tenants"]] == [tenant_b]
    assert body["tenants"][0]["totals"] == reports[tenant_b]["totals"]

    # The reference design's queries, unchanged but for the date, through `meterctl sql`.
    tenants = {row["tenant_id"] for row in sql_rows(local_stack, for_day("tenants", today))}
    assert {tenant_a, tenant_b} <= tenants or len(tenants) == 10  # LIMIT 10, shared stack
    models = {row["model_id"] for row in sql_rows(local_stack, for_day("models", today))}
    assert models
    daily = {
        row["tenant_id"]: row
        for row in sql_rows(local_stack, for_day("daily_usage_by_tenant", today))
    }
    hourly: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in sql_rows(local_stack, for_day("hourly_pattern", today)):
        hourly[row["tenant_id"]]["request_count"] += row["request_count"]
        hourly[row["tenant_id"]]["total_tokens"] += row["total_tokens"]
    for tenant, counts in want.items():
        assert daily[tenant]["usage_date"] == today.isoformat()
        assert daily[tenant]["request_count"] == counts["requests"]
        assert daily[tenant]["total_tokens"] == counts["total_tokens"]
        assert hourly[tenant] == {
            "request_count": counts["requests"],
            "total_tokens": counts["total_tokens"],
        }

    text = local_stack.meterctl("usage", "--token", token_a).stdout
    assert f"Tenant {tenant_a}" in text
    assert "total" in text
