"""GET /usage and GET /admin/usage through the Chalice test client, on moto and local DuckDB."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from chalice.test import Client

from chalicelib import wiring
from chalicelib.analytics.engines import QueryEngine, QueryResult
from chalicelib.analytics.queries import NAMED_QUERIES
from chalicelib.errors import AnalyticsUnavailableError
from chalicelib.settings import Settings
from chalicelib.wiring import query_engine
from tests.functional.conftest import BUCKET, auth, make_settings
from tests.support.lake import Lake, create_catalog
from tests.support.usage_events import event

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
NOW = datetime.now(UTC)
TODAY = NOW.date()
EVIL_TENANT = "x'); DROP TABLE token_usage_logs; -- /* ü 租户 */ ?"
HOSTILE = [
    "'",
    "' OR '1'='1",
    "tenant-b'; --",
    "; DELETE FROM token_usage_logs",
    "-- comment",
    "/* block */",
    "ü租户🚀",
    "?",
    '"',
    "\\",
]


@pytest.fixture
def usage(client: Client, app_env: Settings) -> Client:
    """Two tenants (and one with a hostile id) with usage today, curated, on DuckDB."""
    create_catalog(BUCKET)
    lake = Lake(BUCKET)
    start = datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=UTC)
    events = [
        event("tenant-a", start + timedelta(seconds=1), input_tokens=10, output_tokens=5),
        event("tenant-a", start + timedelta(seconds=2), input_tokens=20, output_tokens=7),
        event("tenant-a", start + timedelta(seconds=3), cache_read=4, cost_usd="0.1"),
        event(
            "tenant-a",
            start + timedelta(seconds=4),
            status="error",
            input_tokens=0,
            output_tokens=0,
            cost_usd="0",
        ),
        event(
            "tenant-b",
            start + timedelta(seconds=5),
            input_tokens=100,
            output_tokens=50,
            cost_usd="0.2",
        ),
        event(EVIL_TENANT, start + timedelta(seconds=6)),
        event(EVIL_TENANT, start + timedelta(seconds=7)),
        event(
            "tenant-c",
            start + timedelta(seconds=8),
            input_tokens=3,
            output_tokens=4,
            cost_usd="0.25",
            model_id=NOVA,
        ),
        event("tenant-c", start + timedelta(seconds=9), cost_usd="0.5"),
        {
            **event("tenant-c", start + timedelta(seconds=10), status="rejected", model_id=NOVA),
            "request_count": 3,
            "input_tokens": 0,
            "output_tokens": 0,
            "total_tokens": 0,
            "cost_usd": "0",
        },
    ]
    lake.put_raw(start, events)
    lake.run(TODAY, now=NOW)
    wiring.override(settings=make_settings(QUERY_ENGINE="duckdb"))
    return client


def get(client: Client, path: str, tenant: str = "tenant-a", **claims: Any) -> Any:
    return client.http.get(path, headers=auth(tenant, **claims))


def body(response: Any) -> Any:
    return json.loads(response.body)


def test_each_tenant_sees_exactly_its_own_usage(usage: Client) -> None:
    a = body(get(usage, "/usage"))
    assert a["tenant_id"] == "tenant-a"
    assert (a["from"], a["to"]) == (TODAY.replace(day=1).isoformat(), TODAY.isoformat())
    assert a["totals"] == {
        "requests": 3,
        "failed_requests": 1,
        "input_tokens": 40,
        "output_tokens": 17,
        "cache_read_input_tokens": 4,
        "cache_write_input_tokens": 0,
        "total_tokens": 61,
        "cost_usd": "0.1000175",
    }
    assert a["models"] == [{"model_id": HAIKU, **a["totals"]}]
    assert a["days"] == [{"date": TODAY.isoformat(), **a["totals"], "models": a["models"]}]
    b = body(get(usage, "/usage", "tenant-b"))
    assert (b["tenant_id"], b["totals"]["requests"], b["totals"]["total_tokens"]) == (
        "tenant-b",
        1,
        150,
    )
    assert b["totals"]["cost_usd"] == "0.2"


@pytest.mark.parametrize(
    "query",
    [
        {"tenant_id": "tenant-b"},
        {"tenant": "tenant-b", "tenantId": "tenant-b", "custom:tenant_id": "tenant-b"},
        {"from": TODAY.replace(day=1).isoformat(), "tenant_id": "tenant-b"},
        {"from": (TODAY - timedelta(days=365)).isoformat(), "to": TODAY.isoformat()},
        {"from": "2000-01-01' OR '1'='1"},
        {"to": f"{TODAY}; SELECT * FROM token_usage_logs --"},  # noqa: S608 (hostile input)
        {"tenant_id": "' OR 1=1 --", "from": "/* */"},
        {"from": "0001-01-01", "to": "9999-12-31"},
        {"from": TODAY.isoformat(), "to": (TODAY - timedelta(days=1)).isoformat()},
    ],
)
def test_whatever_the_query_string_a_tenant_sees_only_its_own_rows(
    usage: Client, query: dict[str, str]
) -> None:
    response = get(usage, "/usage?" + urlencode(query))
    assert response.status_code in (200, 400)
    assert b"tenant-b" not in response.body
    if response.status_code == 200:
        report = body(response)
        assert report["tenant_id"] == "tenant-a"
        assert report["totals"]["requests"] == 3


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=2025-13-01", "'from' is not a real calendar date."),
        ("to=yesterday", "'to' must be a date as YYYY-MM-DD."),
        ("from=2026-01-02&to=2026-01-01", "'from' (2026-01-02) is after 'to' (2026-01-01)."),
        ("from=2024-01-01&to=2026-01-01", "The range covers 732 days; at most 366 are allowed."),
        ("from=2026-01-01&from=2026-01-02", "Give 'from' at most once."),
    ],
)
def test_invalid_dates_or_ranges_get_400_naming_the_problem(
    usage: Client, query: str, message: str
) -> None:
    response = get(usage, f"/usage?{query}")
    assert response.status_code == 400
    assert body(response) == {"Code": "BadRequestError", "Message": message}


def test_usage_needs_a_valid_token(usage: Client) -> None:
    assert usage.http.get("/usage").status_code == 401
    assert usage.http.get("/admin/usage").status_code == 401


def test_admin_usage_is_refused_to_non_admins(usage: Client) -> None:
    response = get(usage, "/admin/usage")
    assert response.status_code == 403
    assert b"tenant-b" not in response.body
    assert get(usage, "/admin/usage", **{"cognito:groups": ["other"]}).status_code == 403


def test_admins_see_every_tenant_and_can_filter_to_one(usage: Client) -> None:
    admin = {"cognito:groups": ["admins"]}
    everyone = body(get(usage, "/admin/usage", "provider", **admin))
    totals = {t["tenant_id"]: t["totals"]["requests"] for t in everyone["tenants"]}
    assert totals == {"tenant-a": 3, "tenant-b": 1, EVIL_TENANT: 2, "tenant-c": 2}
    one = body(get(usage, "/admin/usage?tenant_id=tenant-b", "provider", **admin))
    assert [t["tenant_id"] for t in one["tenants"]] == ["tenant-b"]
    evil = body(get(usage, f"/admin/usage?tenant_id={quote(EVIL_TENANT)}", "provider", **admin))
    assert [(t["tenant_id"], t["totals"]["requests"]) for t in evil["tenants"]] == [
        (EVIL_TENANT, 2)
    ]
    assert body(get(usage, "/admin/usage?tenant_id=nobody", "provider", **admin))["tenants"] == []


class RecordingEngine:
    """Passes every query to the real engine and keeps what it was given."""

    def __init__(self, inner: QueryEngine) -> None:
        self.inner = inner
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def query(self, sql: str, params: Sequence[str] = ()) -> QueryResult:
        self.calls.append((sql, tuple(params)))
        return self.inner.query(sql, params)


def test_caller_input_reaches_sql_only_as_parameters(usage: Client, app_env: Settings) -> None:
    engine = RecordingEngine(query_engine(make_settings(QUERY_ENGINE="duckdb")))
    wiring.override(query_engine=engine)
    admin = {"cognito:groups": ["admins"]}
    # Through the token's tenant claim, the admin filter and both dates.
    evil = body(get(usage, "/usage", EVIL_TENANT))
    assert (evil["tenant_id"], evil["totals"]["requests"]) == (EVIL_TENANT, 2)
    for value in HOSTILE:
        assert get(usage, "/usage", value).status_code == 200
        filtered = get(usage, "/admin/usage?" + urlencode({"tenant_id": value}), "p", **admin)
        assert body(filtered)["tenants"] == []
        for name in ("from", "to"):
            assert get(usage, "/usage?" + urlencode({name: value})).status_code == 400
    statements = {query.sql for query in NAMED_QUERIES}
    assert engine.calls
    for sql, _params in engine.calls:
        assert sql in statements  # byte for byte one of the constants
        assert all(value not in sql for value in (*HOSTILE, EVIL_TENANT) if len(value) > 1)
    sent = {param for _, params in engine.calls for param in params}
    assert set(HOSTILE) | {EVIL_TENANT} <= sent


def test_an_unavailable_engine_gives_503_without_its_error_text(usage: Client) -> None:
    class Broken:
        def query(self, sql: str, params: Sequence[str] = ()) -> QueryResult:
            raise AnalyticsUnavailableError(
                "Usage data is temporarily unavailable; please retry shortly.",
                detail="AccessDeniedException: arn:aws:athena:secret",
            )

    wiring.override(query_engine=Broken())
    response = get(usage, "/usage")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert b"arn:aws" not in response.body


def test_usage_is_split_by_model_for_the_period_and_each_day(usage: Client) -> None:
    report = body(get(usage, "/usage", "tenant-c"))
    by_model = {m["model_id"]: m for m in report["models"]}
    assert list(by_model) == [NOVA, HAIKU]
    # Three refusals aggregated in one event count as three failed requests.
    assert (by_model[NOVA]["requests"], by_model[NOVA]["failed_requests"]) == (1, 3)
    assert (by_model[NOVA]["input_tokens"], by_model[NOVA]["output_tokens"]) == (3, 4)
    assert by_model[NOVA]["cost_usd"] == "0.25"
    assert (by_model[HAIKU]["requests"], by_model[HAIKU]["cost_usd"]) == (1, "0.5")
    assert report["totals"]["cost_usd"] == "0.75"
    assert report["totals"]["failed_requests"] == 3
    (day,) = report["days"]
    assert day["models"] == report["models"]


def test_admins_see_usage_by_model_per_tenant_and_across_tenants(usage: Client) -> None:
    admin = {"cognito:groups": ["admins"]}
    everyone = body(get(usage, "/admin/usage", "provider", **admin))
    tenant_c = next(t for t in everyone["tenants"] if t["tenant_id"] == "tenant-c")
    assert [m["model_id"] for m in tenant_c["models"]] == [NOVA, HAIKU]
    across = {m["model_id"]: m["requests"] for m in everyone["models"]}
    assert across == {NOVA: 1, HAIKU: 3 + 1 + 2 + 1}


def test_admins_read_any_tenants_report_as_that_tenant_sees_it(usage: Client) -> None:
    admin = {"cognito:groups": ["admins"]}
    own = body(get(usage, "/usage?from=" + TODAY.replace(day=1).isoformat(), "tenant-c"))
    seen = body(get(usage, "/admin/tenants/tenant-c/usage", "provider", **admin))
    assert seen == own
    nobody = body(get(usage, "/admin/tenants/nobody/usage", "provider", **admin))
    assert (nobody["models"], nobody["days"]) == ([], [])


@pytest.mark.parametrize(
    "path",
    [
        "/admin/tenants/tenant-b/usage",
        "/admin/tenants/tenant-a/usage",
        "/admin/tenants/tenant-b/usage?tenant_id=tenant-a",
    ],
)
def test_a_tenant_user_cannot_read_a_tenant_report_through_the_admin_route(
    usage: Client, path: str
) -> None:
    response = get(usage, path)
    assert response.status_code == 403
    assert b"tenant-b" not in response.body
    assert usage.http.get(path).status_code == 401
