"""GET/PUT /admin/tenants/{tenant_id}/plan for admins, GET /usage/plan for a tenant's own."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from chalice.test import Client

from tests.functional.budgets.conftest import PLANS_TABLE, BudgetEnv, admin_auth, chat, set_plan
from tests.functional.conftest import auth
from tests.support.tokens import REGION

VALID = {
    "monthly_budget_usd": "25.50",
    "tokens_per_minute": 20_000,
    "requests_per_minute": 30,
    "allowed_models": ["anthropic.claude-3-haiku-20240307-v1:0", "amazon.nova-lite-v1:0"],
}


def put(client: Client, tenant_id: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    payload = body if isinstance(body, str) else json.dumps(body)
    return client.http.put(
        f"/admin/tenants/{tenant_id}/plan", headers=headers or admin_auth(), body=payload
    )


def test_tenant_without_a_plan_gets_the_stage_default(
    client: Client, budget_env: BudgetEnv
) -> None:
    response = client.http.get("/admin/tenants/tenant-new/plan", headers=admin_auth())

    assert response.status_code == 200
    body = response.json_body
    assert body["plan_source"] == "default"
    assert body["plan"] == {
        "monthly_budget_usd": "100.00",
        "tokens_per_minute": 100_000,
        "requests_per_minute": 60,
        "allowed_models": [budget_env.settings.model_id],
    }
    assert body["month_to_date"]["spent_usd"] == "0.00"
    assert body["month_to_date"]["month"] == "2026-11"
    assert body["updated_by"] is None


def test_admin_sets_a_plan_and_reads_it_back_with_counters(
    client: Client, budget_env: BudgetEnv
) -> None:
    response = put(client, "tenant-a", VALID)
    assert response.status_code == 200
    assert response.json_body["plan"] == VALID
    assert response.json_body["plan_source"] == "tenant"
    assert response.json_body["updated_by"] == "ops"

    budget_env.bedrock.reply()
    assert chat(client).status_code == 200

    body = client.http.get("/admin/tenants/tenant-a/plan", headers=admin_auth()).json_body
    assert body["plan"] == VALID
    month = body["month_to_date"]
    assert month["spent_usd"] == "0.000009"
    assert month["remaining_usd"] == "25.499991"
    assert month["requests"] == 1
    assert month["total_tokens"] == 16
    assert body["price_version"]


def test_budget_is_stored_as_an_exact_decimal_number(client: Client, budget_env: BudgetEnv) -> None:
    put(client, "tenant-a", {**VALID, "monthly_budget_usd": "0.000001"})
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=PLANS_TABLE, Key={"pk": {"S": "TENANT#tenant-a"}, "sk": {"S": "PLAN"}}
    )["Item"]
    assert item["monthly_budget_usd"] == {"N": "0.000001"}


def test_allowed_models_default_to_the_stage_model(client: Client, budget_env: BudgetEnv) -> None:
    body = {k: v for k, v in VALID.items() if k != "allowed_models"}
    response = put(client, "tenant-a", body)
    assert response.json_body["plan"]["allowed_models"] == [budget_env.settings.model_id]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"monthly_budget_usd": "-1"}, "monthly_budget_usd"),
        ({"monthly_budget_usd": "lots"}, "monthly_budget_usd"),
        ({"monthly_budget_usd": 25.5}, "monthly_budget_usd"),
        ({"monthly_budget_usd": "NaN"}, "monthly_budget_usd"),
        ({"monthly_budget_usd": "0.0000001"}, "monthly_budget_usd"),
        ({"tokens_per_minute": -5}, "tokens_per_minute"),
        ({"tokens_per_minute": "1000"}, "tokens_per_minute"),
        ({"tokens_per_minute": 0}, "tokens_per_minute"),
        ({"requests_per_minute": 1.5}, "requests_per_minute"),
        ({"requests_per_minute": True}, "requests_per_minute"),
        ({"allowed_models": ["acme.unknown-model-v1:0"]}, "allowed_models"),
        ({"allowed_models": []}, "allowed_models"),
        ({"allowed_models": "anthropic.claude-3-haiku-20240307-v1:0"}, "allowed_models"),
        ({"colour": "blue"}, "colour"),
        ({"monthly_budget_usd": None}, "monthly_budget_usd"),
    ],
)
def test_invalid_plan_is_400_naming_the_field(
    client: Client, budget_env: BudgetEnv, change: dict[str, Any], field: str
) -> None:
    response = put(client, "tenant-a", {**VALID, **change})

    assert response.status_code == 400
    assert field in response.json_body["Message"]
    after = client.http.get("/admin/tenants/tenant-a/plan", headers=admin_auth()).json_body
    assert after["plan_source"] == "default"


@pytest.mark.parametrize(
    "body",
    [
        "",
        "{not json",
        "[]",
        "[" * 100_000,
        '{"monthly_budget_usd": "\\ud800", "tokens_per_minute": 1, "requests_per_minute": 1}',
        '{"monthly_budget_usd": "1", "monthly_budget_usd": "9", "tokens_per_minute": 1,'
        ' "requests_per_minute": 1}',
        '{"monthly_budget_usd": "1", "tokens_per_minute": NaN, "requests_per_minute": 1}',
    ],
    ids=["empty", "not-json", "array", "deep", "lone-surrogate", "duplicate-key", "nan"],
)
def test_malformed_plan_body_is_400(client: Client, budget_env: BudgetEnv, body: str) -> None:
    response = put(client, "tenant-a", body)
    assert response.status_code == 400
    assert response.json_body["Message"]


def test_missing_field_is_400_naming_it(client: Client, budget_env: BudgetEnv) -> None:
    body = {k: v for k, v in VALID.items() if k != "requests_per_minute"}
    response = put(client, "tenant-a", body)
    assert response.status_code == 400
    assert "requests_per_minute" in response.json_body["Message"]


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_non_admins_get_403_on_the_admin_plan_api(
    client: Client, budget_env: BudgetEnv, method: str
) -> None:
    response = client.http.request(
        method, "/admin/tenants/tenant-a/plan", headers=auth("tenant-a"), body=json.dumps(VALID)
    )
    assert response.status_code == 403
    unchanged = client.http.get("/admin/tenants/tenant-a/plan", headers=admin_auth()).json_body
    assert unchanged["plan_source"] == "default"


def test_admin_plan_api_needs_a_token(client: Client, budget_env: BudgetEnv) -> None:
    response = client.http.get(
        "/admin/tenants/tenant-a/plan", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401


def test_tenant_reads_its_own_plan_and_remaining_budget(
    client: Client, budget_env: BudgetEnv
) -> None:
    set_plan(client, "tenant-a", monthly_budget_usd="2")
    set_plan(client, "tenant-b", monthly_budget_usd="7")
    budget_env.bedrock.reply()
    chat(client, "tenant-a")

    response = client.http.get("/usage/plan", headers=auth("tenant-a"))

    assert response.status_code == 200
    body = response.json_body
    assert body["tenant_id"] == "tenant-a"
    assert body["plan"]["monthly_budget_usd"] == "2.00"
    assert body["month_to_date"]["spent_usd"] == "0.000009"
    assert body["month_to_date"]["remaining_usd"] == "1.999991"
    assert "alerts" not in body


def test_usage_plan_ignores_any_other_tenant_named_in_the_request(
    client: Client, budget_env: BudgetEnv
) -> None:
    set_plan(client, "tenant-b", monthly_budget_usd="7")
    headers = {**auth("tenant-a"), "X-Tenant-Id": "tenant-b"}
    response = client.http.get("/usage/plan?tenant_id=tenant-b", headers=headers)
    assert response.status_code == 200
    assert response.json_body["tenant_id"] == "tenant-a"
    assert response.json_body["plan"]["monthly_budget_usd"] == "100.00"


def test_plan_change_applies_to_the_next_request(client: Client, budget_env: BudgetEnv) -> None:
    budget_env.bedrock.reply()
    assert chat(client).status_code == 200
    set_plan(client, "tenant-a", monthly_budget_usd="0.00001")
    assert chat(client).status_code == 429
