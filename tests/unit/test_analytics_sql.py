"""The SQL layer: one Athena-dialect text per query, values only as parameters."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from chalicelib.analytics.engines import athena_literal, to_duckdb
from chalicelib.analytics.queries import (
    NAMED_QUERIES,
    TENANT_DAILY_USAGE,
    USAGE_TABLE,
    NamedQuery,
)
from chalicelib.analytics.schema import GLUE_COLUMN_TYPES, PARTITION_COLUMNS
from chalicelib.usage import FIELDS
from local.provision import load_template
from tests.support.reference_queries import REFERENCE_QUERIES

HOSTILE = [
    "tenant-a",
    "",
    "'",
    "''",
    "x' OR '1'='1",
    "a'; DROP TABLE token_usage_logs; --",
    "-- comment",
    "/* block */ SELECT 1",
    "back\\slash\\'",
    "ünïcödé 租户 🚀",
    "line\nbreak",
    '"double" quotes',
    "?",
]


@pytest.mark.parametrize("query", NAMED_QUERIES, ids=lambda q: q.name)
def test_named_query_transpiles_to_one_duckdb_statement(query: NamedQuery) -> None:
    assert len(to_duckdb(query.sql)) == 1


@pytest.mark.parametrize("query", NAMED_QUERIES, ids=lambda q: q.name)
def test_every_placeholder_is_a_declared_parameter_in_the_where_clause(query: NamedQuery) -> None:
    # Athena accepts execution parameters only in WHERE; each must be bound by name.
    tree = sqlglot.parse_one(query.sql, read="athena")
    placeholders = list(tree.find_all(exp.Placeholder))
    assert len(placeholders) == len(query.params)
    assert all(p.find_ancestor(exp.Where) is not None for p in placeholders)


@pytest.mark.parametrize("query", NAMED_QUERIES, ids=lambda q: q.name)
def test_named_queries_read_only_the_usage_table(query: NamedQuery) -> None:
    tree = sqlglot.parse_one(query.sql, read="athena")
    assert {table.name for table in tree.find_all(exp.Table)} == {USAGE_TABLE}


@pytest.mark.parametrize("name", sorted(REFERENCE_QUERIES))
def test_reference_queries_transpile_unchanged_to_one_duckdb_statement(name: str) -> None:
    statements = to_duckdb(REFERENCE_QUERIES[name])
    assert len(statements) == 1
    assert "bedrock_metering_db.token_usage_logs" in statements[0]


@pytest.mark.parametrize("value", HOSTILE)
def test_athena_literal_is_exactly_one_string_literal_holding_the_value(value: str) -> None:
    literal = sqlglot.parse_one(athena_literal(value), read="athena")
    assert isinstance(literal, exp.Literal)
    assert literal.is_string
    assert literal.this == value


def test_bind_orders_values_by_placeholder_and_refuses_missing_extra_or_non_text() -> None:
    bound = TENANT_DAILY_USAGE.bind(
        last_day="2025-12-31",
        first_day="2025-12-01",
        tenant_id="t",
        first_year="2025",
        last_year="2025",
    )
    assert bound == ("t", "2025", "2025", "2025-12-01", "2025-12-31")
    with pytest.raises(ValueError, match="missing"):
        TENANT_DAILY_USAGE.bind(tenant_id="t")
    with pytest.raises(ValueError, match="unexpected"):
        TENANT_DAILY_USAGE.bind(
            tenant_id="t", first_year="1", last_year="1", first_day="1", last_day="1", x="1"
        )
    with pytest.raises(TypeError):
        TENANT_DAILY_USAGE.bind(
            tenant_id=1,  # type: ignore[arg-type]
            first_year="1",
            last_year="1",
            first_day="1",
            last_day="1",
        )


def test_glue_column_types_match_the_template_and_the_event_schema() -> None:
    table = load_template()["Resources"]["UsageTable"]["Properties"]["TableInput"]
    columns = table["StorageDescriptor"]["Columns"]
    assert [(c["Name"], c["Type"]) for c in columns] == list(GLUE_COLUMN_TYPES.items())
    assert tuple(GLUE_COLUMN_TYPES) == FIELDS
    assert [(k["Name"], k["Type"]) for k in table["PartitionKeys"]] == [
        (name, "string") for name in PARTITION_COLUMNS
    ]
