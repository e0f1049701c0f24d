"""Usage reports from query rows: exact sums, the tenant passed as a parameter, JSON shapes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.analytics.engines import AthenaEngine, QueryResult
from chalicelib.analytics.queries import (
    ALL_TENANTS_MODEL_USAGE,
    ONE_TENANT_MODEL_USAGE,
    ONE_TENANT_USAGE,
    TENANT_DAILY_MODEL_USAGE,
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


HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"


def test_tenant_report_sums_days_exactly_and_binds_the_tenant_as_a_parameter() -> None:
    engine = FakeEngine(
        ("usage_date", "model_id", *COLUMNS),
        [
            ("2025-12-02", HAIKU, 2, 1, 30, 15, 0, 4, 49, Decimal("0.100000000000")),
            ("2025-12-05", HAIKU, 1, 0, 10, 5, 2, 0, 17, Decimal("0.200000000000")),
        ],
    )
    report = tenant_usage(engine, "t'; --", PERIOD)
    assert engine.calls == [
        (TENANT_DAILY_MODEL_USAGE.sql, ("t'; --", "2025", "2025", "2025-12-01", "2025-12-31"))
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
    assert report["models"] == [{"model_id": HAIKU, **report["totals"]}]
    assert [day["date"] for day in report["days"]] == ["2025-12-02", "2025-12-05"]
    assert report["days"][0]["cost_usd"] == "0.1"
    assert [m["model_id"] for m in report["days"][0]["models"]] == [HAIKU]


def test_tenant_report_splits_each_day_and_the_period_by_model_exactly() -> None:
    engine = FakeEngine(
        ("usage_date", "model_id", *COLUMNS),
        [
            ("2025-12-02", NOVA, 1, 0, 7, 3, 0, 0, 10, Decimal("0.000000100001")),
            ("2025-12-02", HAIKU, 2, 1, 30, 15, 0, 4, 49, Decimal("0.1")),
            ("2025-12-03", NOVA, 4, 2, 1, 1, 0, 0, 2, None),  # refusals only: NULL cost
        ],
    )
    report = tenant_usage(engine, "t", PERIOD)
    by_model = {m["model_id"]: m for m in report["models"]}
    assert [m["model_id"] for m in report["models"]] == [NOVA, HAIKU]  # by model id
    assert by_model[NOVA]["requests"] == 5
    assert by_model[NOVA]["failed_requests"] == 2
    assert by_model[NOVA]["cost_usd"] == "0.000000100001"
    assert by_model[HAIKU]["total_tokens"] == 49
    first = report["days"][0]
    assert (first["date"], first["requests"], first["cost_usd"]) == (
        "2025-12-02",
        3,
        "0.100000100001",
    )
    assert [(m["model_id"], m["requests"]) for m in first["models"]] == [(NOVA, 1), (HAIKU, 2)]
    assert report["totals"]["requests"] == sum(m["requests"] for m in report["models"]) == 7
    assert report["totals"]["cost_usd"] == "0.100000100001"


def test_a_tenant_without_usage_gets_zero_totals_and_no_days() -> None:
    report = tenant_usage(FakeEngine(("usage_date", "model_id", *COLUMNS), []), "t", PERIOD)
    assert report["days"] == []
    assert report["models"] == []
    assert report["totals"]["requests"] == 0
    assert report["totals"]["cost_usd"] == "0"


def test_admin_report_uses_the_filtered_query_only_with_a_tenant() -> None:
    rows = [
        ("a", HAIKU, 1, 0, 1, 1, 0, 0, 2, None),
        ("a", NOVA, 2, 0, 1, 1, 0, 0, 2, Decimal("0.5")),
        ("b", HAIKU, 0, 1, 0, 0, 0, 0, 0, Decimal(0)),
    ]
    engine = FakeEngine(("tenant_id", "model_id", *COLUMNS), rows)
    report = tenants_usage(engine, PERIOD)
    tenants_usage(engine, PERIOD, "b")
    assert [sql for sql, _ in engine.calls] == [
        ALL_TENANTS_MODEL_USAGE.sql,
        ONE_TENANT_MODEL_USAGE.sql,
    ]
    assert engine.calls[1][1][0] == "b"
    assert [t["tenant_id"] for t in report["tenants"]] == ["a", "b"]
    a, b = report["tenants"]
    assert (a["totals"]["requests"], a["totals"]["cost_usd"]) == (3, "0.5")
    assert [m["model_id"] for m in a["models"]] == [NOVA, HAIKU]
    assert b["totals"]["cost_usd"] == "0"  # NULL sum is zero
    assert [(m["model_id"], m["requests"], m["failed_requests"]) for m in report["models"]] == [
        (NOVA, 2, 0),
        (HAIKU, 1, 1),
    ]


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
