"""The curated table's shape: Glue column types, partitions, and their Arrow equivalents."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chalicelib.usage import FIELDS

# Glue column types of token_usage_logs (analytics_infra/template.yaml), in schema order.
GLUE_COLUMN_TYPES: Mapping[str, str] = {
    "event_id": "string",
    "schema_version": "int",
    "timestamp": "string",
    "tenant_id": "string",
    "user_id": "string",
    "model_id": "string",
    "input_tokens": "bigint",
    "output_tokens": "bigint",
    "cache_read_input_tokens": "bigint",
    "cache_write_input_tokens": "bigint",
    "total_tokens": "bigint",
    "status": "string",
    "error_code": "string",
    "latency_ms": "bigint",
    "cost_usd": "decimal(38,12)",
    "price_version": "string",
    "request_id": "string",
    "stage": "string",
    "request_count": "bigint",
}
PARTITION_COLUMNS: tuple[str, ...] = ("year", "month", "day")
COST_SCALE = 12  # decimal places of cost_usd in the table


def arrow_type(glue_type: str) -> Any:
    """The Arrow type a Glue column type is stored as in Parquet."""
    import pyarrow as pa

    simple = {"string": pa.string(), "int": pa.int32(), "bigint": pa.int64()}
    if glue_type in simple:
        return simple[glue_type]
    match = re.fullmatch(r"decimal\((\d+),(\d+)\)", glue_type)
    if match is None:
        raise ValueError(f"unsupported Glue type {glue_type}")
    return pa.decimal128(int(match.group(1)), int(match.group(2)))


def curated_arrow_schema(with_partitions: bool = True) -> Any:
    """The curated table as Arrow sees it: the columns, then the string partition columns."""
    import pyarrow as pa

    fields = [pa.field(name, arrow_type(GLUE_COLUMN_TYPES[name])) for name in FIELDS]
    if with_partitions:
        fields += [pa.field(name, pa.string()) for name in PARTITION_COLUMNS]
    return pa.schema(fields)
