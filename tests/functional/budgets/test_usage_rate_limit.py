"""The usage queries (GET /usage, /usage/plan, /admin/usage) share a per-tenant rate limit."""

from __future__ import annotations

from chalice.test import Client

from chalicelib import wiring
from tests.functional.budgets.conftest import BudgetEnv, admin_auth, budget_settings
from tests.functional.conftest import auth


def test_usage_queries_past_the_tenant_s_limit_are_429_until_the_next_minute(
    client: Client, budget_env: BudgetEnv
) -> None:
    wiring.override(settings=budget_settings(USAGE_REQUESTS_PER_MINUTE="3"))
    for _ in range(3):
        assert client.http.get("/usage/plan", headers=auth("tenant-a")).status_code == 200

    for path in ("/usage/plan", "/usage"):
        refused = client.http.get(path, headers=auth("tenant-a"))
        assert refused.status_code == 429
        assert "3 usage queries per minute" in refused.json_body["Message"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60

    assert client.http.get("/usage/plan", headers=auth("tenant-b")).status_code == 200
    admin = client.http.get("/admin/tenants/tenant-a/plan", headers=admin_auth())
    assert admin.status_code == 200  # the admin plan API is not a usage query
