"""Where Athena-dialect SQL runs: Athena through awswrangler when deployed, DuckDB locally.

Both engines take the same text and the same positional string parameters. Athena receives
the parameters as execution parameters (bound server-side); DuckDB receives the text after
sqlglot has transpiled it and binds the same values itself. Neither formats a value into SQL.
"""

from __future__ import annotations

import functools
import io
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.analytics.catalog import PartitionCatalog
from chalicelib.analytics.curated import conform
from chalicelib.analytics.schema import curated_arrow_schema
from chalicelib.aws_errors import is_not_found
from chalicelib.errors import AnalyticsUnavailableError, ConfigurationError
from chalicelib.layout import split_s3_url
from chalicelib.usage import FIELDS

logger = logging.getLogger(__name__)

UNAVAILABLE = "Usage data is temporarily unavailable; please retry shortly."
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of plain Python values (int, str, Decimal, date, None...)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class QueryEngine(Protocol):
    """Runs one Athena-dialect statement with positional `?` parameters."""

    def query(self, sql: str, params: Sequence[str] = ()) -> QueryResult: ...


def athena_literal(value: str) -> str:
    """A string as the SQL literal Athena's execution parameters require.

    Athena reads each execution parameter as a literal of the statement's type, and strings
    must be quoted; a quote inside is doubled, the only escape in Trino string literals. The
    result is always exactly one string literal, whatever the value holds.
    """
    return "'" + value.replace("'", "''") + "'"


# --------------------------------------------------------------------------- Athena


ReadSqlQuery = Callable[..., Any]


class AthenaEngine:
    """Runs statements on Athena in the stage's workgroup and Glue database (awswrangler)."""

    def __init__(
        self,
        *,
        database: str,
        workgroup: str,
        boto3_session: Any = None,
        read_sql_query: ReadSqlQuery | None = None,
    ) -> None:
        self._database = database
        self._workgroup = workgroup
        self._session = boto3_session
        self._read_sql_query = read_sql_query

    def query(self, sql: str, params: Sequence[str] = ()) -> QueryResult:
        """Run one statement; results come back through the workgroup's result location."""
        read_sql_query = self._read_sql_query
        if read_sql_query is None:
            import awswrangler as wr

            read_sql_query = wr.athena.read_sql_query
        try:
            frame = read_sql_query(
                sql.strip().rstrip(";"),
                database=self._database,
                workgroup=self._workgroup,
                ctas_approach=False,  # plain SELECT; CTAS would need Glue write rights
                params=[athena_literal(value) for value in params] if params else None,
                paramstyle="qmark",
                boto3_session=self._session,
            )
        except Exception as exc:  # awswrangler and botocore raise many types; all mean the same
            logger.error(
                "athena query failed", extra={"error_type": type(exc).__name__, "error": str(exc)}
            )
            raise AnalyticsUnavailableError(UNAVAILABLE, detail=str(exc)) from exc
        return _result_from_frame(frame)


def _result_from_frame(frame: Any) -> QueryResult:
    """A pandas DataFrame as plain rows; pandas' missing markers (NA, NaN, NaT) become None."""
    import pandas as pd

    def plain(value: Any) -> Any:
        if isinstance(value, list | dict | tuple):
            return value
        return None if pd.isna(value) else value

    columns = tuple(str(name) for name in frame.columns)
    values = [[plain(value) for value in frame[name].tolist()] for name in frame.columns]
    return QueryResult(columns, tuple(zip(*values, strict=True)) if values else ())


# --------------------------------------------------------------------------- DuckDB


@functools.lru_cache(maxsize=256)
def to_duckdb(sql: str) -> tuple[str, ...]:
    """Athena-dialect text as DuckDB statements (sqlglot), one per statement in the text."""
    import sqlglot
    from sqlglot.errors import SqlglotError

    try:
        statements = sqlglot.transpile(sql, read="athena", write="duckdb")
    except SqlglotError as exc:
        raise AnalyticsUnavailableError("The SQL could not be parsed.", detail=str(exc)) from exc
    return tuple(statement for statement in statements if statement.strip())


@dataclass(frozen=True)
class _Snapshot:
    """The partitions (values, location) a loaded table was built from. A generation folder
    never changes once committed, so the same locations mean the same rows."""

    partitions: tuple[tuple[tuple[str, ...], str], ...]


class DuckDBEngine:
    """Runs transpiled statements on DuckDB over the curated Parquet in S3 (the local stack).

    It reads what Athena would: the Glue table's partitions, each from the folder its
    location names (the files directly in it, not those whose names start with `_` or `.`,
    which Hive-style readers skip). The objects are read with boto3 (DuckDB itself never
    opens an s3:// URL nor downloads an extension), concatenated into one Arrow table, and
    exposed as `<database>.<table>` with the database on the search path, so both the
    qualified names of the reference queries and the unqualified ones of
    chalicelib.analytics.queries resolve. The table is reloaded only when a partition moves.
    """

    def __init__(
        self,
        *,
        s3: Any,
        catalog: PartitionCatalog,
        database: str,
        table: str,
        max_load_attempts: int = 3,
    ) -> None:
        for name in (database, table):
            if not _IDENTIFIER.match(name):
                raise ConfigurationError(f"not a usable SQL identifier: {name!r}")
        self._s3 = s3
        self._catalog = catalog
        self._database = database
        self._table = table
        self._max_load_attempts = max_load_attempts
        self._lock = threading.Lock()
        self._connection: Any = None
        self._snapshot: _Snapshot | None = None

    def query(self, sql: str, params: Sequence[str] = ()) -> QueryResult:
        """Run one statement with positional parameters (DuckDB binds them)."""
        import duckdb

        statements = to_duckdb(sql)
        if len(statements) != 1:
            raise AnalyticsUnavailableError(
                "Give exactly one SQL statement.", detail=f"{len(statements)} statements"
            )
        with self._lock:
            connection = self._current_connection()
            try:
                cursor = connection.execute(statements[0], list(params))
                columns = tuple(column[0] for column in cursor.description or ())
                rows = tuple(tuple(row) for row in cursor.fetchall()) if columns else ()
            except duckdb.Error as exc:
                logger.error("duckdb query failed", extra={"error": str(exc)})
                raise AnalyticsUnavailableError(UNAVAILABLE, detail=str(exc)) from exc
        return QueryResult(columns, rows)

    def _current_connection(self) -> Any:
        for attempt in range(1, self._max_load_attempts + 1):
            snapshot = self._list()
            if self._connection is not None and snapshot == self._snapshot:
                return self._connection
            try:
                table = self._load(snapshot)
            except _ObjectVanishedError as exc:
                # A folder retired long ago was deleted between our listing and our read.
                if attempt == self._max_load_attempts:
                    raise AnalyticsUnavailableError(UNAVAILABLE, detail="data moving") from exc
                continue
            self._connection = self._connect(table)
            self._snapshot = snapshot
            return self._connection
        raise AssertionError("unreachable")

    def _list(self) -> _Snapshot:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            partitions = self._catalog.partitions()
        except (BotoCoreError, ClientError) as exc:
            raise AnalyticsUnavailableError(UNAVAILABLE, detail=str(exc)) from exc
        return _Snapshot(tuple((p.values, p.location) for p in partitions))

    def _load(self, snapshot: _Snapshot) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from botocore.exceptions import BotoCoreError, ClientError

        schema = curated_arrow_schema()
        tables = []
        for values, location in snapshot.partitions:
            try:
                bucket, folder = split_s3_url(location.rstrip("/") + "/")
            except ValueError:
                continue  # not an S3 folder: Athena could not read it either
            try:
                for key in self._files(bucket, folder):
                    body = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                    part = conform(pq.read_table(io.BytesIO(body)))
                    rows = part.num_rows
                    columns = [part.column(name) for name in FIELDS]
                    columns += [pa.repeat(pa.scalar(v, pa.string()), rows) for v in values]
                    tables.append(pa.Table.from_arrays(columns, schema=schema))
            except ClientError as exc:
                if is_not_found(exc):
                    raise _ObjectVanishedError(location) from exc
                raise AnalyticsUnavailableError(UNAVAILABLE, detail=str(exc)) from exc
            except BotoCoreError as exc:
                raise AnalyticsUnavailableError(UNAVAILABLE, detail=str(exc)) from exc
        if not tables:
            return schema.empty_table()
        return pa.concat_tables(tables)

    def _files(self, bucket: str, folder: str) -> list[str]:
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=folder, Delimiter="/"):
            for item in page.get("Contents", []):
                name = item["Key"][len(folder) :]
                if name and not name.startswith(("_", ".")) and item.get("Size", 1) > 0:
                    keys.append(item["Key"])
        return sorted(keys)

    def _connect(self, table: Any) -> Any:
        import duckdb

        connection = duckdb.connect(
            ":memory:",
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
        # The names are configuration, checked to be plain identifiers; nothing here is input.
        database, view = _quoted(self._database), _quoted(self._table)
        connection.execute("SET TimeZone = 'UTC'")
        connection.register("curated_usage_arrow", table)
        connection.execute(f"CREATE SCHEMA {database}")
        connection.execute(f"CREATE VIEW {database}.{view} AS SELECT * FROM curated_usage_arrow")  # noqa: S608
        connection.execute(f"SET search_path = '{self._database},main'")
        # No files, URLs or extensions from here on, whatever SQL an operator sends.
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
        return connection


class _ObjectVanishedError(Exception):
    """A listed curated object was gone when read."""


def _quoted(identifier: str) -> str:
    """A checked identifier (letters, digits, underscores) in double quotes."""
    if not _IDENTIFIER.match(identifier):
        raise ConfigurationError(f"not a usable SQL identifier: {identifier!r}")
    return f'"{identifier}"'
