"""Usage reports from query rows: exact sums, the tenant passed as a parameter, JSON shapes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.analytics.engines import AthenaEngine, QueryResult
from chalicelib.analytics.queries import (
    ALL_TENANTS_USAGE,
    ONE_TENANT_USAGE,
    TENANT_DAILY_USAGE,
)
from chalicelib.analytics.reports import Period, tenant_usage, tenants_usage
from chalicelib.errors import AnalyticsUnavailableError

PERIOD = Period(date(2025, 12, 1), date(2025, 12, 31))
COLUMNS = (
    "requests",
    "failed_requests",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "total_tokens",
    "cost_usd",
)


class FakeEngine:
    """Answers with canned rows and records what it was asked."""

    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.result = QueryResult(tuple(columns), tuple(tuple(r) for r in rows))
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def query(self, sql: str, params: Sequence[str] = ()) -> QueryResult:
        self.calls.append((sql, tuple(params)))
        return self.result


def test_tenant_report_sums_days_exactly_and_binds_the_tenant_as_a_parameter() -> None:
    engine = FakeEngine(
        ("usage_date", *COLUMNS),
        [
            ("2025-12-02", 2, 1, 30, 15, 0, 4, 49, Decimal("0.100000000000")),
            ("2025-12-05", 1, 0, 10, 5, 2, 0, 17, Decimal("0.200000000000")),
        ],
    )
    report = tenant_usage(engine, "t'; --", PERIOD)
    assert engine.calls == [
        (TENANT_DAILY_USAGE.sql, ("t'; --", "2025", "2025", "2025-12-01", "2025-12-31"))
    ]
    assert report["tenant_id"] == "t'; --"
    assert (report["from"], report["to"]) == ("2025-12-01", "2025-12-31")
    assert report["totals"] == {
        "requests": 3,
        "failed_requests": 1,
        "input_tokens": 40,
        "output_tokens": 20,
        "cache_read_input_tokens": 2,
        "cache_write_input_tokens": 4,
        "total_tokens": 66,
        "cost_usd": "0.3",
    }
    assert [day["date"] for day in report["days"]] == ["2025-12-02", "2025-12-05"]
    assert report["days"][0]["cost_usd"] == "0.1"


def test_a_tenant_without_usage_gets_zero_totals_and_no_days() -> None:
    report = tenant_usage(FakeEngine(("usage_date", *COLUMNS), []), "t", PERIOD)
    assert report["days"] == []
    assert report["totals"]["requests"] == 0
    assert report["totals"]["cost_usd"] == "0"


def test_admin_report_uses_the_filtered_query_only_with_a_tenant() -> None:
    rows = [("a", 1, 0, 1, 1, 0, 0, 2, None), ("b", 0, 1, 0, 0, 0, 0, 0, Decimal(0))]
    engine = FakeEngine(("tenant_id", *COLUMNS), rows)
    report = tenants_usage(engine, PERIOD)
    tenants_usage(engine, PERIOD, "b")
    assert [sql for sql, _ in engine.calls] == [ALL_TENANTS_USAGE.sql, ONE_TENANT_USAGE.sql]
    assert engine.calls[1][1][0] == "b"
    assert [t["tenant_id"] for t in report["tenants"]] == ["a", "b"]
    assert report["tenants"][0]["totals"]["cost_usd"] == "0"  # NULL sum is zero


def test_athena_engine_sends_the_sql_unchanged_and_values_as_quoted_parameters() -> None:
    import pandas as pd  # noqa: TID251 (a test may; the chat path may not)

    seen: dict[str, Any] = {}

    def read_sql_query(sql: str, **kwargs: Any) -> Any:
        seen.update(kwargs, sql=sql)
        return pd.DataFrame({"tenant_id": ["x"], "requests": pd.array([None], dtype="Int64")})

    engine = AthenaEngine(database="db", workgroup="wg", read_sql_query=read_sql_query)
    result = engine.query(ONE_TENANT_USAGE.sql, ("it's", "2025", "2025", "2025-12-01", "x"))
    assert seen["sql"] == ONE_TENANT_USAGE.sql
    assert seen["params"] == ["'it''s'", "'2025'", "'2025'", "'2025-12-01'", "'x'"]
    assert seen["paramstyle"] == "qmark"
    assert (seen["database"], seen["workgroup"], seen["ctas_approach"]) == ("db", "wg", False)
    assert result.records() == [{"tenant_id": "x", "requests": None}]


def test_athena_failures_become_unavailable_without_leaking_into_the_message() -> None:
    def failing(sql: str, **kwargs: Any) -> Any:
        raise RuntimeError("AccessDenied: arn:aws:iam::123:role/secret")

    engine = AthenaEngine(database="db", workgroup="wg", read_sql_query=failing)
    with pytest.raises(AnalyticsUnavailableError) as caught:
        engine.query("SELECT 1")
    assert "arn:aws" not in caught.value.message
    assert "AccessDenied" in caught.value.detail
