"""The curated Parquet files: written with pyarrow, read whole or by row group from S3."""

from __future__ import annotations

import io
import os
from typing import Any

from chalicelib.analytics.schema import curated_arrow_schema
from chalicelib.usage import FIELDS, parse_timestamp

# Rows per row group: small enough that the budget repair reads little more than the tenant
# and minute it looks for (row-group statistics on tenant_id and timestamp), big enough that
# Athena's per-row-group overhead stays negligible (a group is about 1 MB of Parquet).
ROW_GROUP_ROWS = 32_768
# Columns with few distinct values get Parquet dictionaries; ids and timestamps would only
# fall back from a dictionary after paying for one.
DICTIONARY_COLUMNS = (
    "schema_version",
    "tenant_id",
    "user_id",
    "model_id",
    "status",
    "error_code",
    "price_version",
    "stage",
    "request_count",
)


def file_schema() -> Any:
    """The columns of a curated Parquet file (the partition values live in Glue, not here)."""
    return curated_arrow_schema(with_partitions=False)


def write_parquet(table: Any, path: str) -> int:
    """Write event rows (the table's columns are selected and cast) to a local Parquet file;
    return its size."""
    import pyarrow.parquet as pq

    schema = file_schema()
    rows = table.select(list(FIELDS)).cast(schema)
    with pq.ParquetWriter(
        path,
        schema,
        compression="snappy",
        write_statistics=True,
        use_dictionary=list(DICTIONARY_COLUMNS),
    ) as writer:
        writer.write_table(rows, row_group_size=ROW_GROUP_ROWS)
    return os.path.getsize(path)


def upload(s3: Any, bucket: str, key: str, path: str) -> None:
    """Put a local file (one PUT: a bucket file is tens of MB, far below S3's 5 GB)."""
    with open(path, "rb") as body:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/octet-stream")


def read_curated(s3: Any, bucket: str, key: str) -> Any:
    """A curated file's rows (the table's columns, in the table's types)."""
    import pyarrow.parquet as pq

    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    return conform(table)


def conform(table: Any) -> Any:
    """Rows read from Parquet with exactly the table's columns and types (a column an older
    file lacks is null, as Athena reads it)."""
    import pyarrow as pa

    schema = file_schema()
    rows = table.num_rows
    columns = [
        table.column(name).cast(schema.field(name).type)
        if name in table.column_names
        else pa.nulls(rows, schema.field(name).type)
        for name in FIELDS
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def instants(column: Any) -> Any:
    """The `timestamp` strings of curated rows as UTC instants.

    Arrow's cast reads the common forms; a form only Python reads (the rule that admitted the
    event) is converted row by row.
    """
    import pyarrow as pa

    kind = pa.timestamp("us", tz="UTC")
    try:
        return column.cast(kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([parse_timestamp(text) for text in column.to_pylist()], kind)


class S3RangeFile(io.RawIOBase):
    """A read-only, seekable view of one S3 object through ranged GETs, so pyarrow can read a
    Parquet footer and chosen row groups without fetching the whole file."""

    def __init__(self, s3: Any, bucket: str, key: str, size: int | None = None) -> None:
        super().__init__()
        self._s3, self._bucket, self._key = s3, bucket, key
        if size is None:
            size = int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
        self._size = size
        self._position = 0
        self.bytes_read = 0
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def size(self) -> int:
        return self._size

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        end = self._position + wanted - 1
        body = self._s3.get_object(
            Bucket=self._bucket, Key=self._key, Range=f"bytes={self._position}-{end}"
        )["Body"].read()
        buffer[: len(body)] = body
        self._position += len(body)
        self.bytes_read += len(body)
        self.requests += 1
        return len(body)
