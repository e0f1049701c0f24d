"""The budget on POST /bedrock/chat: reserve before the model, settle after, refuse early."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import boto3
import pytest
from botocore.stub import Stubber
from chalice.test import Client

from chalicelib import wiring
from chalicelib.budgets.dynamo import DynamoBudgetStore
from tests.functional.budgets.conftest import (
    PLANS_TABLE,
    BudgetEnv,
    admin_auth,
    chat,
    set_plan,
)
from tests.functional.conftest import stored_events
from tests.support.tokens import REGION

# "hi" with max_tokens 64 reserves (2 + 64) * 0.25 + 64 * 1.25 micro-dollars; the stubbed
# model answers 11 input and 5 output tokens: 11 * 0.25 + 5 * 1.25 = 9 micro-dollars.
WORST_CASE = Decimal("0.0000965")
ACTUAL = Decimal("0.000009")


def plan_view(client: Client, tenant_id: str) -> dict[str, object]:
    response = client.http.get(f"/admin/tenants/{tenant_id}/plan", headers=admin_auth())
    assert response.status_code == 200
    return response.json_body  # type: ignore[no-any-return]


def test_chat_settles_the_actual_cost_and_releases_the_rest(
    client: Client, budget_env: BudgetEnv
) -> None:
    budget_env.bedrock.reply()

    assert chat(client).status_code == 200

    month = plan_view(client, "tenant-a")["month_to_date"]
    assert month["spent_usd"] == str(ACTUAL)  # type: ignore[index]
    assert month["reserved_usd"] == "0.00"  # type: ignore[index]
    assert month["requests"] == 1  # type: ignore[index]
    assert (month["input_tokens"], month["output_tokens"]) == (11, 5)  # type: ignore[index]
    assert month["remaining_usd"] == "99.999991"  # type: ignore[index]


def test_over_budget_tenant_gets_429_with_retry_after_and_no_model_call(
    client: Client, budget_env: BudgetEnv
) -> None:
    set_plan(client, "tenant-a", monthly_budget_usd="0.0001")
    budget_env.bedrock.reply()
    assert chat(client).status_code == 200
    calls_before = len(budget_env.bedrock.calls)

    refused = chat(client)

    assert refused.status_code == 429
    assert "Monthly budget reached" in refused.json_body["Message"]
    # 2026-11-14T12:00:05Z to 2026-12-01T00:00:00Z
    assert refused.headers["Retry-After"] == str(16 * 86400 + 11 * 3600 + 59 * 60 + 55)
    assert len(budget_env.bedrock.calls) == calls_before
    rejected = [e for e in stored_events() if e["status"] == "rejected"]
    assert len(rejected) == 1
    assert rejected[0]["error_code"] == "BudgetExceeded"
    assert rejected[0]["cost_usd"] == "0"
    assert rejected[0]["total_tokens"] == 0
    assert refused.headers["X-Request-Id"] == rejected[0]["event_id"]
    assert plan_view(client, "tenant-a")["month_to_date"]["spent_usd"] == str(ACTUAL)  # type: ignore[index]


def test_request_costing_more_than_the_whole_budget_is_429_until_next_month(
    client: Client, budget_env: BudgetEnv
) -> None:
    set_plan(client, "tenant-a", monthly_budget_usd="0.00005")
    response = chat(client)
    assert response.status_code == 429
    assert "more than your whole monthly budget" in response.json_body["Message"]
    assert budget_env.bedrock.calls == []


def test_disallowed_model_is_403_without_model_call(client: Client, budget_env: BudgetEnv) -> None:
    set_plan(client, "tenant-a", allowed_models=["amazon.nova-micro-v1:0"])

    response = chat(client)

    assert response.status_code == 403
    assert "does not allow the model" in response.json_body["Message"]
    assert budget_env.bedrock.calls == []
    (event,) = stored_events()
    assert (event["status"], event["error_code"]) == ("rejected", "ModelNotAllowed")


def test_model_allowed_through_its_cross_region_profile_id(
    client: Client, budget_env: BudgetEnv
) -> None:
    set_plan(client, "tenant-a", allowed_models=[f"us.{budget_env.settings.model_id}"])
    budget_env.bedrock.reply()
    assert chat(client).status_code == 200


def test_requests_per_minute_limit_gives_429_until_the_next_minute(
    client: Client, budget_env: BudgetEnv
) -> None:
    set_plan(client, "tenant-a", requests_per_minute=2)
    for _ in range(3):
        budget_env.bedrock.reply()

    assert [chat(client).status_code for _ in range(2)] == [200, 200]
    refused = chat(client)

    assert refused.status_code == 429
    assert "2 requests per minute" in refused.json_body["Message"]
    assert refused.headers["Retry-After"] == "55"  # the clock stands at 12:00:05
    assert len(budget_env.bedrock.calls) == 2
    budget_env.clock.advance(seconds=55)
    assert chat(client).status_code == 200


def test_tokens_per_minute_counts_worst_case_until_settled(
    client: Client, budget_env: BudgetEnv
) -> None:
    # Each call holds 66 + 64 = 130 tokens while it runs and 16 once settled.
    set_plan(client, "tenant-a", tokens_per_minute=150)
    for _ in range(3):
        budget_env.bedrock.reply()

    assert chat(client).status_code == 200  # 16 counted after the settle
    assert chat(client).status_code == 200  # 16 + 130 <= 150 while reserving
    refused = chat(client)  # 32 + 130 > 150

    assert refused.status_code == 429
    assert "150 tokens per minute" in refused.json_body["Message"]
    budget_env.clock.advance(minutes=1)
    assert chat(client).status_code == 200


def test_request_larger_than_the_token_rate_is_400(client: Client, budget_env: BudgetEnv) -> None:
    set_plan(client, "tenant-a", tokens_per_minute=100)
    response = chat(client)
    assert response.status_code == 400
    assert "Lower max_tokens" in response.json_body["Message"]
    assert budget_env.bedrock.calls == []


def test_rate_limits_are_per_tenant(client: Client, budget_env: BudgetEnv) -> None:
    set_plan(client, "tenant-a", requests_per_minute=1)
    for _ in range(2):
        budget_env.bedrock.reply()
    assert chat(client, "tenant-a").status_code == 200
    assert chat(client, "tenant-b").status_code == 200
    assert chat(client, "tenant-a").status_code == 429


def test_new_month_starts_from_zero_without_a_manual_step(
    client: Client, budget_env: BudgetEnv
) -> None:
    set_plan(client, "tenant-a", monthly_budget_usd="0.0001")
    budget_env.bedrock.reply()
    assert chat(client).status_code == 200
    assert chat(client).status_code == 429

    budget_env.clock.set(datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC))
    budget_env.bedrock.reply()

    assert chat(client).status_code == 200
    view = plan_view(client, "tenant-a")["month_to_date"]
    assert view["month"] == "2026-12"  # type: ignore[index]
    assert view["spent_usd"] == str(ACTUAL)  # type: ignore[index]
    november = DynamoBudgetStore(PLANS_TABLE).get_month("tenant-a", "2026-11")
    assert november.settled_usd == ACTUAL


def test_model_error_releases_the_reservation(client: Client, budget_env: BudgetEnv) -> None:
    budget_env.bedrock.fail("ModelErrorException", 424)
    assert chat(client).status_code == 502
    month = plan_view(client, "tenant-a")["month_to_date"]
    assert (month["spent_usd"], month["reserved_usd"]) == ("0.00", "0.00")  # type: ignore[index]
    assert month["requests_in_flight"] == 0  # type: ignore[index]


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "InternalServerError"])
def test_budget_store_failure_during_reserve_fails_closed_with_503(
    client: Client, budget_env: BudgetEnv, code: str
) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    stubber = Stubber(dynamodb)
    stubber.add_response("get_item", {})  # no plan of its own: the default plan
    for _ in range(3):  # every attempt botocore would make
        stubber.add_client_error("update_item", service_error_code=code, http_status_code=500)
    wiring.override(budget_store=DynamoBudgetStore(PLANS_TABLE, client=dynamodb))

    with stubber:
        response = chat(client)

    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert code not in response.json_body["Message"]
    assert budget_env.bedrock.calls == []
    (event,) = stored_events()
    assert (event["status"], event["error_code"]) == ("rejected", "BudgetStoreUnavailable")
