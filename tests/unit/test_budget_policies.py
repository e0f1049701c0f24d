"""The deployed stages' IAM policies grant what the budget code calls, on its resources only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUDGET_DYNAMODB_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",  # an abandoned Idempotency-Key claim, a flushed refusal counter
    "dynamodb:Query",
}


def statements(stage: str) -> dict[str, dict[str, object]]:
    policy = json.loads((ROOT / ".chalice" / f"policy-{stage}.json").read_text())
    return {s["Sid"]: s for s in policy["Statement"]}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_budget_table_access_is_scoped_to_the_stage_plans_table(stage: str) -> None:
    grant = statements(stage)["BudgetPlansAndCounters"]
    assert set(grant["Action"]) == BUDGET_DYNAMODB_ACTIONS  # type: ignore[arg-type]
    # analytics_infra/template.yaml: TableName bedrock-metering-${Stage}-plans
    assert grant["Resource"] == f"arn:aws:dynamodb:*:*:table/bedrock-metering-{stage}-plans"


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_alerts_publish_only_to_the_stage_topic(stage: str) -> None:
    grant = statements(stage)["PublishBudgetAlerts"]
    assert grant["Action"] == ["sns:Publish"]
    assert grant["Resource"] == f"arn:aws:sns:*:*:bedrock-metering-{stage}-budget-alerts"


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_no_budget_statement_uses_a_wildcard_action(stage: str) -> None:
    for sid, grant in statements(stage).items():
        actions = grant["Action"] if isinstance(grant["Action"], list) else [grant["Action"]]
        assert not any(a == "*" or a.endswith(":*") for a in actions), sid  # type: ignore[union-attr]
