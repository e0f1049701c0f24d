"""Usage reports for GET /usage and GET /admin/usage: periods, queries, response shapes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, TypedDict

from chalicelib.analytics.engines import QueryEngine
from chalicelib.analytics.queries import (
    ALL_TENANTS_MODEL_USAGE,
    ONE_TENANT_MODEL_USAGE,
    TENANT_DAILY_MODEL_USAGE,
    NamedQuery,
)
from chalicelib.errors import InvalidRequestError
from chalicelib.identity import MAX_TENANT_ID_LENGTH
from chalicelib.pricing import format_usd
from chalicelib.usage import NO_TOKENS, TOKEN_FIELDS, TokenCounts, TokenUsage

MAX_PERIOD_DAYS = 366
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits; used with fullmatch
# The counts of a report, in the order the API sends them (cost_usd follows).
COUNTERS: tuple[str, ...] = ("requests", "failed_requests", *TOKEN_FIELDS)


class UsageTotals(TokenCounts):
    """Counts for a period or a day. `cost_usd` is an exact decimal string.

    On the wire: requests, failed_requests, the token counts, cost_usd (see Counts.to_json).
    """

    requests: int
    failed_requests: int
    cost_usd: str


class ModelUsage(UsageTotals):
    """One model's counts (the model the calls named: a model id, profile id or ARN)."""

    model_id: str


class DayUsage(UsageTotals):
    """One UTC day's counts, and the same split by model."""

    date: str
    models: list[ModelUsage]


# "from" is a Python keyword, hence the functional form.
TenantUsageReport = TypedDict(
    "TenantUsageReport",
    {
        "tenant_id": str,
        "from": str,
        "to": str,
        "totals": UsageTotals,
        "models": list[ModelUsage],
        "days": list[DayUsage],
    },
)


class TenantTotals(TypedDict):
    tenant_id: str
    totals: UsageTotals
    models: list[ModelUsage]


AdminUsageReport = TypedDict(
    "AdminUsageReport",
    {"from": str, "to": str, "models": list[ModelUsage], "tenants": list[TenantTotals]},
)


@dataclass(frozen=True)
class Period:
    """An inclusive range of UTC days."""

    first: date
    last: date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def params(self) -> dict[str, str]:
        """The period as the named queries' parameters."""
        return {
            "first_year": f"{self.first:%Y}",
            "last_year": f"{self.last:%Y}",
            "first_day": self.first.isoformat(),
            "last_day": self.last.isoformat(),
        }


def parse_period(query: Mapping[str, Any] | None, today: date) -> Period:
    """`from` and `to` (inclusive ISO dates) from a query string; default: this month to date.

    `to` defaults to `today` and `from` to the first day of `to`'s month.

    Raises InvalidRequestError naming the problem: a malformed or impossible date, a `from`
    after `to`, or a range longer than MAX_PERIOD_DAYS.
    """
    first = _date_param(query, "from")
    last = _date_param(query, "to")
    if last is None:
        last = today
    if first is None:
        first = last.replace(day=1)
    if first > last:
        raise InvalidRequestError(f"'from' ({first}) is after 'to' ({last}).")
    period = Period(first, last)
    if period.days > MAX_PERIOD_DAYS:
        raise InvalidRequestError(
            f"The range covers {period.days} days; at most {MAX_PERIOD_DAYS} are allowed."
        )
    return period


def parse_tenant_filter(query: Mapping[str, Any] | None) -> str | None:
    """The optional `tenant_id` filter of the admin report."""
    value = _single(query, "tenant_id")
    if value is None:
        return None
    if not value.strip() or len(value) > MAX_TENANT_ID_LENGTH:
        raise InvalidRequestError(
            f"'tenant_id' must be 1 to {MAX_TENANT_ID_LENGTH} characters when given."
        )
    return value


def _single(query: Mapping[str, Any] | None, name: str) -> str | None:
    if not query or name not in query:
        return None
    getlist = getattr(query, "getlist", None)
    values = list(getlist(name)) if callable(getlist) else [query[name]]
    if len(values) != 1:
        raise InvalidRequestError(f"Give '{name}' at most once.")
    value = values[0]
    if not isinstance(value, str):
        raise InvalidRequestError(f"'{name}' must be text.")
    return value


def _date_param(query: Mapping[str, Any] | None, name: str) -> date | None:
    value = _single(query, name)
    if value is None:
        return None
    if not _ISO_DATE.fullmatch(value):
        raise InvalidRequestError(f"'{name}' must be a date as YYYY-MM-DD.")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError(f"'{name}' is not a real calendar date.") from None


# --------------------------------------------------------------------------- counts


@dataclass(frozen=True)
class Counts:
    """Summed usage; cost exact."""

    requests: int = 0
    failed_requests: int = 0
    tokens: TokenUsage = NO_TOKENS
    cost_usd: Decimal = Decimal(0)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Counts:
        """A result row of the named queries (SUMs over no rows are NULL: zero)."""
        return cls(
            requests=int(row.get("requests") or 0),
            failed_requests=int(row.get("failed_requests") or 0),
            tokens=TokenUsage.from_record(row, absent_is_zero=True),
            cost_usd=Decimal(str(row.get("cost_usd") or 0)),
        )

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            requests=self.requests + other.requests,
            failed_requests=self.failed_requests + other.failed_requests,
            tokens=self.tokens + other.tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )

    def to_json(self) -> UsageTotals:
        return UsageTotals(
            requests=self.requests,
            failed_requests=self.failed_requests,
            **self.tokens.as_dict(),
            cost_usd=format_usd(self.cost_usd),
        )


def _run(engine: QueryEngine, query: NamedQuery, **values: str) -> list[dict[str, Any]]:
    return engine.query(query.sql, query.bind(**values)).records()


def _by_model(counts: Mapping[str, Counts]) -> list[ModelUsage]:
    """Per-model counts as the API lists them: by model id."""
    return [
        ModelUsage(model_id=model_id, **counts[model_id].to_json()) for model_id in sorted(counts)
    ]


def _add(into: dict[str, Counts], key: str, counts: Counts) -> None:
    into[key] = into.get(key, Counts()) + counts


def tenant_usage(engine: QueryEngine, tenant_id: str, period: Period) -> TenantUsageReport:
    """One tenant's totals, its usage by model, and the days it had usage on (oldest first),
    each day split by model. One query: everything is summed from its day-and-model rows."""
    rows = _run(engine, TENANT_DAILY_MODEL_USAGE, tenant_id=tenant_id, **period.params())
    days: dict[str, dict[str, Counts]] = {}
    models: dict[str, Counts] = {}
    totals = Counts()
    for row in rows:
        counts = Counts.from_row(row)
        model_id = str(row["model_id"])
        _add(days.setdefault(str(row["usage_date"]), {}), model_id, counts)
        _add(models, model_id, counts)
        totals += counts
    return {
        "tenant_id": tenant_id,
        "from": period.first.isoformat(),
        "to": period.last.isoformat(),
        "totals": totals.to_json(),
        "models": _by_model(models),
        "days": [
            DayUsage(
                date=day,
                **sum(by_model.values(), Counts()).to_json(),
                models=_by_model(by_model),
            )
            for day, by_model in sorted(days.items())
        ],
    }


def tenants_usage(
    engine: QueryEngine, period: Period, tenant_id: str | None = None
) -> AdminUsageReport:
    """Every tenant's totals and usage by model for the period (or just `tenant_id`'s), by
    tenant id, and the period's usage by model across them."""
    if tenant_id is None:
        rows = _run(engine, ALL_TENANTS_MODEL_USAGE, **period.params())
    else:
        rows = _run(engine, ONE_TENANT_MODEL_USAGE, tenant_id=tenant_id, **period.params())
    tenants: dict[str, dict[str, Counts]] = {}
    models: dict[str, Counts] = {}
    for row in rows:
        counts = Counts.from_row(row)
        model_id = str(row["model_id"])
        _add(tenants.setdefault(str(row["tenant_id"]), {}), model_id, counts)
        _add(models, model_id, counts)
    return {
        "from": period.first.isoformat(),
        "to": period.last.isoformat(),
        "models": _by_model(models),
        "tenants": [
            TenantTotals(
                tenant_id=tenant,
                totals=sum(by_model.values(), Counts()).to_json(),
                models=_by_model(by_model),
            )
            for tenant, by_model in sorted(tenants.items())
        ],
    }
