"""The analytics SQL, written once in Athena (Trino) dialect; caller values are `?` parameters.

Every statement here runs unchanged on Athena and, transpiled by sqlglot, on DuckDB. Values
never enter the text: they travel as positional parameters, bound by name with
`NamedQuery.bind`. Athena accepts `?` only in the WHERE clause, so that is the only place one
appears. The table is named without its database: Athena runs in the Glue database, the local
engine puts the same name on its search path.

Periods are pruned twice: `year BETWEEN` bounds the partitions Athena lists, the concatenated
`year-month-day` bounds the exact days. Both are ISO strings, so string order is date order.
"""

from __future__ import annotations

from dataclasses import dataclass

# The curated table every statement reads (Glue: bedrock_metering_db.token_usage_logs).
USAGE_TABLE = "token_usage_logs"


@dataclass(frozen=True)
class NamedQuery:
    """One SQL statement and the names of its positional parameters, in order."""

    name: str
    sql: str
    params: tuple[str, ...]

    def bind(self, **values: str) -> tuple[str, ...]:
        """The parameter values in placeholder order; every name exactly once, all strings."""
        missing = [name for name in self.params if name not in values]
        extra = sorted(set(values) - set(self.params))
        if missing or extra:
            raise ValueError(f"{self.name}: missing {missing}, unexpected {extra}")
        for name, value in values.items():
            if not isinstance(value, str):
                raise TypeError(f"{self.name}: parameter {name} must be a string")
        return tuple(values[name] for name in self.params)


# `requests` counts calls that succeeded; `failed_requests` the error, rejected and aborted
# ones. An event stands for `request_count` requests (1 unless it aggregates refusals; NULL in
# Parquet written before the column existed). The status literals are part of the query.
_TOTALS = """SUM(CASE WHEN status = 'ok' THEN COALESCE(request_count, 1) ELSE 0 END) AS requests,
    SUM(CASE WHEN status IN ('error', 'rejected', 'aborted') THEN COALESCE(request_count, 1)
        ELSE 0 END) AS failed_requests,
    SUM(input_tokens) AS input_tokens,
    SUM(output_tokens) AS output_tokens,
    SUM(cache_read_input_tokens) AS cache_read_input_tokens,
    SUM(cache_write_input_tokens) AS cache_write_input_tokens,
    SUM(total_tokens) AS total_tokens,
    SUM(cost_usd) AS cost_usd"""
_DAY = "concat(year, '-', month, '-', day)"
_PERIOD = ("first_year", "last_year", "first_day", "last_day")


def _usage_query(
    name: str, *, keys: tuple[str, ...], group_by: str, order_by: str, one_tenant: bool
) -> NamedQuery:
    """The usage totals per `keys` over a period, for one tenant or for all of them.

    Every statement has the same sums and the same period bounds; they differ only in what
    they group by and whether the tenant is a parameter."""
    columns = "".join(f"    {key},\n" for key in keys)
    tenant = "tenant_id = ?\n    AND " if one_tenant else ""
    return NamedQuery(
        name=name,
        # Text from this module's constants only; caller values travel as parameters.
        sql=f"""SELECT
{columns}    {_TOTALS}
FROM {USAGE_TABLE}
WHERE {tenant}year BETWEEN ? AND ?
    AND {_DAY} BETWEEN ? AND ?
GROUP BY {group_by}
ORDER BY {order_by}""",  # noqa: S608
        params=(("tenant_id",) if one_tenant else ()) + _PERIOD,
    )


TENANT_DAILY_USAGE = _usage_query(
    "tenant_daily_usage",
    keys=(f"{_DAY} AS usage_date",),
    group_by="year, month, day",
    order_by="usage_date",
    one_tenant=True,
)
ALL_TENANTS_USAGE = _usage_query(
    "all_tenants_usage",
    keys=("tenant_id",),
    group_by="tenant_id",
    order_by="tenant_id",
    one_tenant=False,
)
ONE_TENANT_USAGE = _usage_query(
    "one_tenant_usage",
    keys=("tenant_id",),
    group_by="tenant_id",
    order_by="tenant_id",
    one_tenant=True,
)

# By model: the reports are built from these (one statement per API call, one scan on
# Athena); totals, days and models are sums of their rows. The three above stay as the
# plainer forms (the benchmark times them; an operator can reuse them).
TENANT_DAILY_MODEL_USAGE = _usage_query(
    "tenant_daily_model_usage",
    keys=(f"{_DAY} AS usage_date", "model_id"),
    group_by="year, month, day, model_id",
    order_by="usage_date, model_id",
    one_tenant=True,
)
ALL_TENANTS_MODEL_USAGE = _usage_query(
    "all_tenants_model_usage",
    keys=("tenant_id", "model_id"),
    group_by="tenant_id, model_id",
    order_by="tenant_id, model_id",
    one_tenant=False,
)
ONE_TENANT_MODEL_USAGE = _usage_query(
    "one_tenant_model_usage",
    keys=("tenant_id", "model_id"),
    group_by="tenant_id, model_id",
    order_by="tenant_id, model_id",
    one_tenant=True,
)

NAMED_QUERIES: tuple[NamedQuery, ...] = (
    TENANT_DAILY_USAGE,
    ALL_TENANTS_USAGE,
    ONE_TENANT_USAGE,
    TENANT_DAILY_MODEL_USAGE,
    ALL_TENANTS_MODEL_USAGE,
    ONE_TENANT_MODEL_USAGE,
)
