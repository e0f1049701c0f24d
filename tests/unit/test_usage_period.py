"""Periods of GET /usage: defaults, bounds, and 400s that name the problem."""

from __future__ import annotations

from datetime import date

import pytest

from chalicelib.analytics.reports import (
    MAX_PERIOD_DAYS,
    Period,
    parse_period,
    parse_tenant_filter,
)
from chalicelib.errors import InvalidRequestError

TODAY = date(2026, 3, 17)


class MultiDict(dict[str, list[str]]):
    """Chalice's query_params shape: .get gives one value, .getlist all of them."""

    def __getitem__(self, key: str) -> str:  # type: ignore[override]
        return super().__getitem__(key)[-1]

    def getlist(self, key: str) -> list[str]:
        return super().__getitem__(key)


def test_no_dates_means_the_current_month_to_date() -> None:
    assert parse_period(None, TODAY) == Period(date(2026, 3, 1), TODAY)
    assert parse_period({}, TODAY) == Period(date(2026, 3, 1), TODAY)


def test_only_to_means_that_months_start_to_it() -> None:
    assert parse_period({"to": "2025-12-07"}, TODAY) == Period(date(2025, 12, 1), date(2025, 12, 7))


def test_only_from_runs_to_today() -> None:
    assert parse_period({"from": "2026-01-10"}, TODAY) == Period(date(2026, 1, 10), TODAY)


def test_other_query_parameters_are_ignored() -> None:
    query = {"tenant_id": "tenant-b", "from": "2026-03-02", "sql": "1; DROP TABLE x"}
    assert parse_period(query, TODAY) == Period(date(2026, 3, 2), TODAY)


def test_a_range_of_exactly_the_maximum_is_allowed() -> None:
    period = parse_period({"from": "2025-03-17", "to": "2026-03-17"}, TODAY)
    assert period.days == MAX_PERIOD_DAYS


def test_a_longer_range_is_refused_with_its_length() -> None:
    with pytest.raises(InvalidRequestError, match="367 days; at most 366"):
        parse_period({"from": "2025-03-16", "to": "2026-03-17"}, TODAY)
    with pytest.raises(InvalidRequestError, match="at most 366"):
        parse_period({"from": "0001-01-01", "to": "9999-12-31"}, TODAY)


def test_a_reversed_range_is_refused_naming_both_ends() -> None:
    with pytest.raises(
        InvalidRequestError, match=r"'from' \(2026-03-10\) is after 'to' \(2026-03-09\)"
    ):
        parse_period({"from": "2026-03-10", "to": "2026-03-09"}, TODAY)
    with pytest.raises(InvalidRequestError, match="after 'to'"):
        parse_period({"from": "2026-04-01"}, TODAY)  # 'to' defaults to today


@pytest.mark.parametrize(
    "value",
    [
        "2026-3-1",
        "20260301",
        "2026-W10-1",
        "2026-03-01T00:00:00",
        " 2026-03-01",
        "2026-03-01' OR '1'='1",
        "2026-03-01; DROP TABLE token_usage_logs; --",
        "/* */",
        "２０２６-０３-０１",  # full-width digits: Python's \d would match them
        "2026-03-01\n",
        "",
    ],
)
def test_malformed_dates_are_refused_naming_the_parameter(value: str) -> None:
    with pytest.raises(InvalidRequestError, match="'from' must be a date as YYYY-MM-DD"):
        parse_period({"from": value}, TODAY)


def test_impossible_calendar_dates_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="'to' is not a real calendar date"):
        parse_period({"to": "2026-02-30"}, TODAY)


def test_a_repeated_parameter_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="'from' at most once"):
        parse_period(MultiDict({"from": ["2026-03-01", "2026-03-02"]}), TODAY)


def test_period_parameters_are_iso_strings() -> None:
    assert Period(date(2025, 12, 30), date(2026, 1, 2)).params() == {
        "first_year": "2025",
        "last_year": "2026",
        "first_day": "2025-12-30",
        "last_day": "2026-01-02",
    }


def test_tenant_filter_is_optional_bounded_text() -> None:
    assert parse_tenant_filter({}) is None
    assert parse_tenant_filter({"tenant_id": "x' OR 1=1 --"}) == "x' OR 1=1 --"
    for bad in ("", "   ", "t" * 129):
        with pytest.raises(InvalidRequestError, match="'tenant_id' must be 1 to 128"):
            parse_tenant_filter({"tenant_id": bad})
