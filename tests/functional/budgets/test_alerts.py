"""Threshold alerts at 50, 80 and 100 % of the monthly budget: one SNS message each per month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chalice.test import Client

from chalicelib import wiring
from chalicelib.budgets.alerts import AlertNotSentError, BudgetAlert
from chalicelib.wiring import run_budget_repair
from tests.functional.budgets.conftest import BudgetEnv, admin_auth, chat, set_plan

# "hi" with max_tokens 1 reserves 66 * 0.25 + 1 * 1.25 = 17.75 micro-dollars; the stubbed model
# bills 9. With a 100 micro-dollar budget, settled spend goes 9, 18, ... 54 (50 % crossed by
# the 6th call), ... 81 (80 %, 9th), 90; the 11th is refused with 10 left, less than a request
# needs: the 100 % ("exhausted") alert.
BUDGET = "0.0001"


def spend_until_refused(client: Client, env: BudgetEnv, tenant_id: str = "tenant-a") -> list[int]:
    statuses = []
    for _ in range(12):
        env.bedrock.reply()
        statuses.append(chat(client, tenant_id, max_tokens=1).status_code)
    return statuses


def test_each_threshold_alerts_exactly_once_per_month(
    client: Client, budget_env: BudgetEnv
) -> None:
    set_plan(client, "tenant-a", monthly_budget_usd=BUDGET)

    statuses = spend_until_refused(client, budget_env)

    assert statuses[:10] == [200] * 10
    assert set(statuses[10:]) == {429}
    messages = budget_env.alerts.messages()
    assert [m["threshold_percent"] for m in messages] == [50, 80, 100]
    assert [m["reason"] for m in messages] == ["spend", "spend", "exhausted"]
    assert messages[1]["spent_usd"] == "0.000081"
    assert messages[1]["monthly_budget_usd"] == BUDGET
    assert {m["alert_id"] for m in messages} == {
        "tenant-a/2026-11/50",
        "tenant-a/2026-11/80",
        "tenant-a/2026-11/100",
    }
    markers = client.http.get("/admin/tenants/tenant-a/plan", headers=admin_auth()).json_body
    assert sorted(markers["alerts"]) == ["100", "50", "80"]
    assert all(v.startswith("sent ") for v in markers["alerts"].values())


def test_repair_job_does_not_resend_alerts(client: Client, budget_env: BudgetEnv) -> None:
    set_plan(client, "tenant-a", monthly_budget_usd=BUDGET)
    spend_until_refused(client, budget_env)

    run_budget_repair(budget_env.settings, budget_env.clock() + timedelta(hours=1))

    assert budget_env.alerts.thresholds("tenant-a") == [50, 80, 100]


def test_alerts_start_again_in_a_new_month(client: Client, budget_env: BudgetEnv) -> None:
    set_plan(client, "tenant-a", monthly_budget_usd=BUDGET)
    spend_until_refused(client, budget_env)
    budget_env.clock.set(datetime(2026, 12, 2, 9, 0, tzinfo=UTC))

    spend_until_refused(client, budget_env)

    messages = budget_env.alerts.messages()
    assert [(m["month"], m["threshold_percent"]) for m in messages] == [
        ("2026-11", 50),
        ("2026-11", 80),
        ("2026-11", 100),
        ("2026-12", 50),
        ("2026-12", 80),
        ("2026-12", 100),
    ]


def test_alerts_are_per_tenant(client: Client, budget_env: BudgetEnv) -> None:
    set_plan(client, "tenant-a", monthly_budget_usd=BUDGET)
    set_plan(client, "tenant-b", monthly_budget_usd="100")
    spend_until_refused(client, budget_env, "tenant-a")
    budget_env.bedrock.reply()
    chat(client, "tenant-b", max_tokens=1)
    assert budget_env.alerts.thresholds("tenant-b") == []


class FlakyPublisher:
    """Wraps the SNS publisher; the first `failures` publishes fail."""

    def __init__(self, inner: object, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def publish(self, alert: BudgetAlert) -> None:
        if self.failures:
            self.failures -= 1
            raise AlertNotSentError("SNS unavailable")
        self.inner.publish(alert)  # type: ignore[attr-defined]


def test_failed_publish_is_left_pending_and_sent_once_by_the_repair_job(
    client: Client, budget_env: BudgetEnv
) -> None:
    from chalicelib.wiring import alert_publisher

    flaky = FlakyPublisher(alert_publisher(budget_env.settings), failures=1)
    wiring.override(alert_publisher=flaky)
    set_plan(client, "tenant-a", monthly_budget_usd=BUDGET)
    for _ in range(6):  # 54 of 100: crosses 50 %
        budget_env.bedrock.reply()
        assert chat(client, max_tokens=1).status_code == 200
    assert budget_env.alerts.thresholds("tenant-a") == []
    pending = client.http.get("/admin/tenants/tenant-a/plan", headers=admin_auth()).json_body
    assert pending["alerts"]["50"].startswith("pending ")

    too_soon = budget_env.clock() + timedelta(seconds=30)
    run_budget_repair(budget_env.settings, too_soon)
    assert budget_env.alerts.thresholds("tenant-a") == []

    later = budget_env.clock() + timedelta(minutes=5)
    budget_env.clock.set(later)
    run_budget_repair(budget_env.settings, later)
    run_budget_repair(budget_env.settings, later + timedelta(minutes=5))

    assert budget_env.alerts.thresholds("tenant-a") == [50]
