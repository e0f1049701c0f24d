"""Partition maintenance: one UTC day of raw and fallback usage events -> its Parquet partition.

`job(day=..., now=...)` lists the objects that can hold the day's events (Firehose's `raw/`
and the recorder's `fallback/`, over the day's hours plus a lateness window), parses their
lines, keeps the events stamped on that day, removes duplicate `event_id`s, and rewrites the
day's partition of the Glue table with awswrangler (which also registers the partition). A
manifest per day records which input objects the partition was built from, so a run whose
inputs have not changed does nothing, and a run whose inputs have (late objects) rebuilds.

pandas, pyarrow and awswrangler are imported inside the functions that need them: this module
is imported by app.py (through chalicelib.analytics.maintenance), and the chat path must not
load them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from chalicelib.analytics.schema import (
    COST_SCALE,
    GLUE_COLUMN_TYPES,
    PARTITION_COLUMNS,
    arrow_type,
)
from chalicelib.aws_errors import is_not_found
from chalicelib.errors import MeteringError
from chalicelib.layout import BucketLayout, day_path, hour_of_key, partition_values
from chalicelib.usage import FIELD_DEFAULTS, FIELDS

if TYPE_CHECKING:
    from chalicelib.settings import Settings

logger = logging.getLogger(__name__)

# Bump when the same inputs would now give a different partition: every day is rebuilt once.
JOB_VERSION = 1
# Firehose names an object after the arrival hour of its oldest record, and a buffer can
# carry the next hour's first records: the hour before a day can hold that day's first events.
EARLY_HOURS = 1
# Events reach Firehose after their timestamp (the model call, resends with backoff); the
# hours after the day that are read for stragglers. Objects delivered later still are picked
# up by the sweep (their day's inputs change) or by `meterctl backfill`.
DEFAULT_LATENESS_HOURS = 2
READ_CONCURRENCY = 16
MAX_ROWS_PER_FILE = 1_000_000  # about 40 MB of Parquet per file
REPORTED_INVALID_LINES = 20
PROGRESS_INTERVAL_S = 5.0

# Where an event can come from; the index is its rank when two copies tie on timestamp.
SOURCES: tuple[str, ...] = ("raw", "fallback")
# Every field must be present and non-null except the error code of a successful call.
OPTIONAL_FIELDS = frozenset({"error_code"})
_STRING_FIELDS = frozenset(name for name, kind in GLUE_COLUMN_TYPES.items() if kind == "string")
_INTEGER_FIELDS = frozenset(
    name for name, kind in GLUE_COLUMN_TYPES.items() if kind in ("int", "bigint")
)
_MAX_COST = Decimal(10) ** (38 - COST_SCALE)
_COST_QUANTUM = Decimal(1).scaleb(-COST_SCALE)

Progress = Callable[[str], None]
Status = Literal["written", "unchanged", "empty"]


class PartitionJobError(MeteringError):
    """The partition cannot be rebuilt safely; nothing was changed."""


_DEFAULT_LAYOUT = BucketLayout()


@dataclass(frozen=True)
class PartitionJobConfig:
    """Where the job reads and writes, and how far it looks for late events."""

    bucket: str
    raw_prefix: str = _DEFAULT_LAYOUT.raw_prefix
    fallback_prefix: str = _DEFAULT_LAYOUT.fallback_prefix
    curated_prefix: str = _DEFAULT_LAYOUT.curated_prefix
    database: str = "bedrock_metering_db"
    table: str = "token_usage_logs"
    lateness_hours: int = DEFAULT_LATENESS_HOURS
    early_hours: int = EARLY_HOURS
    manifest_prefix: str = _DEFAULT_LAYOUT.manifest_prefix
    read_concurrency: int = READ_CONCURRENCY
    max_rows_per_file: int = MAX_ROWS_PER_FILE

    @classmethod
    def from_settings(cls, settings: Settings) -> PartitionJobConfig:
        """The stage's bucket, prefixes, Glue names and lateness window."""
        return cls(
            bucket=settings.analytics_bucket,
            raw_prefix=settings.raw_prefix,
            fallback_prefix=settings.fallback_prefix,
            curated_prefix=settings.curated_prefix,
            database=settings.glue_database,
            table=settings.glue_table,
            lateness_hours=settings.partition_lateness_hours,
        )

    @property
    def layout(self) -> BucketLayout:
        """The bucket layout these prefixes make."""
        return BucketLayout(
            raw_prefix=self.raw_prefix,
            fallback_prefix=self.fallback_prefix,
            curated_prefix=self.curated_prefix,
            manifest_prefix=self.manifest_prefix,
        )

    @property
    def curated_path(self) -> str:
        """The Glue table's location."""
        return self.layout.curated_url(self.bucket)

    def prefix_of(self, source: str) -> str:
        return self.raw_prefix if source == "raw" else self.fallback_prefix


# --------------------------------------------------------------------------- which objects


def source_hours(
    day: date, lateness_hours: int, early_hours: int = EARLY_HOURS
) -> tuple[datetime, ...]:
    """The UTC hours whose objects can hold events stamped on `day`, in order."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=early_hours)
    return tuple(start + timedelta(hours=n) for n in range(early_hours + 24 + lateness_hours))


def in_window(hour: datetime, day: date, lateness_hours: int, early_hours: int) -> bool:
    """Whether the objects of `hour` are read when `day` is rebuilt."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return (
        start - timedelta(hours=early_hours) <= hour < start + timedelta(hours=24 + lateness_hours)
    )


@dataclass(frozen=True)
class SourceObject:
    """One object that may hold events of the day being rebuilt."""

    source: str  # "raw" (Firehose) or "fallback" (the recorder's own writes)
    key: str
    etag: str
    size: int
    hour: datetime  # the hour in its key: arrival hour for raw, event hour for fallback


def list_sources(s3: Any, config: PartitionJobConfig, day: date) -> list[SourceObject]:
    """Every raw and fallback object under the hours that can hold `day`'s events, sorted."""
    hours = set(source_hours(day, config.lateness_hours, config.early_hours))
    day_prefixes = sorted({day_path(hour) for hour in hours})
    found: list[SourceObject] = []
    for source in SOURCES:
        prefix = config.prefix_of(source)
        for day_prefix in day_prefixes:
            paginator = s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=config.bucket, Prefix=prefix + day_prefix):
                for item in page.get("Contents", []):
                    hour = hour_of_key(item["Key"], prefix)
                    if hour in hours and item.get("Size", 0) > 0:
                        found.append(
                            SourceObject(
                                source=source,
                                key=item["Key"],
                                etag=str(item.get("ETag", "")),
                                size=int(item.get("Size", 0)),
                                hour=hour,
                            )
                        )
    return sorted(found, key=lambda obj: (SOURCES.index(obj.source), obj.key))


def inputs_digest(objects: Iterable[SourceObject]) -> str:
    """A fingerprint of the input set: changes when an object is added, replaced or removed."""
    digest = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: (o.source, o.key)):
        digest.update(f"{obj.source}\t{obj.key}\t{obj.etag}\t{obj.size}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class InvalidLine:
    """A line that is not a usable schema-v1 event (kept out of the table, and reported)."""

    key: str
    line: int  # 1-based, counting non-empty lines
    reason: str


@dataclass
class _DayRows:
    """What the objects of one day's window held, accumulated as they are read."""

    tables: list[Any] = field(default_factory=list)
    lines: int = 0
    invalid_count: int = 0
    invalid: list[InvalidLine] = field(default_factory=list)
    other_days: int = 0
    orphaned: Counter[str] = field(default_factory=Counter)


def _json_schema() -> Any:
    """How the JSON reader types each field; cost stays text until it is cast exactly."""
    import pyarrow as pa

    types = {"string": pa.string(), "int": pa.int64(), "bigint": pa.int64()}
    return pa.schema(
        [pa.field(name, types.get(GLUE_COLUMN_TYPES[name], pa.string())) for name in FIELDS]
    )


def event_schema() -> Any:
    """Parsed events: the table's columns and types, the parsed timestamp, and their origin."""
    import pyarrow as pa

    return pa.schema(
        [pa.field(name, arrow_type(GLUE_COLUMN_TYPES[name])) for name in FIELDS]
        + [
            pa.field("_ts", pa.timestamp("us", tz="UTC")),
            pa.field("_src", pa.int8()),
            pa.field("_obj", pa.int32()),
            pa.field("_row", pa.int32()),
        ]
    )


def parse_events(
    body: bytes, *, key: str, source_rank: int, object_index: int
) -> tuple[Any, int, list[InvalidLine], int]:
    """Parse newline-delimited events: (table, non-empty lines, invalid lines, invalid count).

    A vectorised pass (pyarrow's JSON reader and casts) handles well-formed objects; an object
    it cannot take whole is parsed line by line, so one bad line costs only itself.
    """
    parsed = _parse_vectorised(body, key)
    if parsed is None:
        parsed = _parse_line_by_line(body, key)
    table, lines, invalid, invalid_count = parsed
    return _with_origin(table, source_rank, object_index), lines, invalid, invalid_count


def _parse_vectorised(body: bytes, key: str) -> tuple[Any, int, list[InvalidLine], int] | None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    schema = event_schema()
    try:
        raw = pj.read_json(
            io.BytesIO(body),
            read_options=pj.ReadOptions(use_threads=False, block_size=4 << 20),
            parse_options=pj.ParseOptions(
                explicit_schema=_json_schema(), unexpected_field_behavior="ignore"
            ),
        )
        columns = [
            _with_default(raw.column(name).cast(schema.field(name).type), name) for name in FIELDS
        ]
        timestamps = raw.column("timestamp").cast(pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    rows = raw.num_rows
    origin = [pa.nulls(rows, pa.int8()), pa.nulls(rows, pa.int32())]
    numbers = pa.array(range(rows), pa.int32())
    table = pa.Table.from_arrays([*columns, timestamps, *origin, numbers], schema=schema)
    complete = pc.is_valid(table.column("_ts"))
    for name in FIELDS:
        if name not in OPTIONAL_FIELDS:
            complete = pc.and_(complete, pc.is_valid(table.column(name)))
    counted = pc.fill_null(pc.greater_equal(table.column("request_count"), 1), False)
    complete = pc.and_(complete, counted)
    bad = pc.sum(pc.invert(complete)).as_py() or 0
    invalid: list[InvalidLine] = []
    if bad:
        bad_rows = pc.indices_nonzero(pc.invert(complete)).to_pylist()
        for row in bad_rows[:REPORTED_INVALID_LINES]:
            missing = [
                name
                for name in (*FIELDS, "_ts")
                if name not in OPTIONAL_FIELDS and not table.column(name)[row].is_valid
            ]
            if not missing:
                invalid.append(InvalidLine(key, row + 1, "request_count must be at least 1"))
                continue
            field_name = "timestamp" if missing[0] == "_ts" else missing[0]
            invalid.append(InvalidLine(key, row + 1, f"{field_name} is missing"))
        table = table.filter(complete)
    return table, rows, invalid, bad


def _with_default(column: Any, name: str) -> Any:
    """A column with the schema's default where a line left an optional field out."""
    if name not in FIELD_DEFAULTS:
        return column
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.fill_null(column, pa.scalar(FIELD_DEFAULTS[name], column.type))


def _parse_line_by_line(body: bytes, key: str) -> tuple[Any, int, list[InvalidLine], int]:
    import pyarrow as pa

    records: list[dict[str, Any]] = []
    invalid: list[InvalidLine] = []
    invalid_count = 0
    lines = [line for line in body.splitlines() if line.strip()]
    for row, line in enumerate(lines):
        try:
            record = coerce_event(json.loads(line))
        except (ValueError, UnicodeDecodeError) as exc:
            invalid_count += 1
            if len(invalid) < REPORTED_INVALID_LINES:
                reason = "not JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
                invalid.append(InvalidLine(key, row + 1, reason))
            continue
        record["_row"] = row
        records.append(record)
    table = pa.Table.from_pylist(records, schema=event_schema())
    return table, len(lines), invalid, invalid_count


def coerce_event(value: Any) -> dict[str, Any]:
    """Check one decoded JSON line against schema v1; return it typed, or raise ValueError."""
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    record: dict[str, Any] = {}
    for name in FIELDS:
        item = value.get(name, FIELD_DEFAULTS.get(name))
        if item is None:
            if name in OPTIONAL_FIELDS:
                record[name] = None
                continue
            raise ValueError(f"{name} is missing")
        if name == "cost_usd":
            record[name] = parse_cost(item)
        elif name in _INTEGER_FIELDS:
            if isinstance(item, bool) or not isinstance(item, int):
                raise ValueError(f"{name} must be an integer")
            if name == "request_count" and item < 1:
                raise ValueError("request_count must be at least 1")
            record[name] = item
        elif name in _STRING_FIELDS:
            if not isinstance(item, str):
                raise ValueError(f"{name} must be a string")
            record[name] = item
    record["_ts"] = parse_event_time(record["timestamp"])
    return record


def parse_cost(value: Any) -> Decimal:
    """An exact cost: a decimal string (or integer) with at most 12 decimal places."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("cost_usd must be a decimal string")
    try:
        cost = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("cost_usd is not a decimal number") from None
    if not cost.is_finite() or abs(cost) >= _MAX_COST:
        raise ValueError("cost_usd is out of range")
    if cost != cost.quantize(_COST_QUANTUM):
        raise ValueError(f"cost_usd has more than {COST_SCALE} decimal places")
    return cost


def parse_event_time(text: str) -> datetime:
    """An ISO-8601 timestamp with a zone (`Z` or an offset), in UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("timestamp is not ISO-8601") from None
    if moment.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return moment.astimezone(UTC)


def _with_origin(table: Any, source_rank: int, object_index: int) -> Any:
    import pyarrow as pa

    rows = table.num_rows
    for name, value, kind in (("_src", source_rank, pa.int8()), ("_obj", object_index, pa.int32())):
        column = pa.repeat(pa.scalar(value, kind), rows)
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


# --------------------------------------------------------------------------- day and dedupe


def split_by_day(table: Any, day: date) -> tuple[Any, Counter[date]]:
    """The rows stamped on `day`, and how many rows each other day has in the table."""
    import pyarrow as pa
    import pyarrow.compute as pc

    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    start_scalar = pa.scalar(start, pa.timestamp("us", tz="UTC"))
    end_scalar = pa.scalar(start + timedelta(days=1), pa.timestamp("us", tz="UTC"))
    stamps = table.column("_ts")
    on_day = pc.and_(pc.greater_equal(stamps, start_scalar), pc.less(stamps, end_scalar))
    others: Counter[date] = Counter()
    if table.num_rows and not pc.all(on_day).as_py():
        other_days = pc.cast(stamps.filter(pc.invert(on_day)), pa.date32())
        for entry in pc.value_counts(other_days).to_pylist():
            others[entry["values"]] += entry["counts"]
    return table.filter(on_day), others


def first_copies(table: Any) -> tuple[Any, int]:
    """Row indices of one copy per event_id, and how many copies were dropped.

    The copy kept is the earliest: by timestamp, then raw before fallback, then object key,
    then line, so the choice does not depend on the order the objects were read in. Sorting
    puts each event's copies next to each other, earliest first; the first of each run stays.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = table.num_rows
    if rows == 0:
        return pa.array([], pa.uint64()), 0
    order = pc.sort_indices(
        table.select(["event_id", "_ts", "_src", "_obj", "_row"]),
        sort_keys=[
            ("event_id", "ascending"),
            ("_ts", "ascending"),
            ("_src", "ascending"),
            ("_obj", "ascending"),
            ("_row", "ascending"),
        ],
    )
    ids = table.column("event_id").take(order).combine_chunks()
    starts_run = pa.concat_arrays(
        [pa.array([True]), pc.not_equal(ids.slice(1), ids.slice(0, rows - 1))]
    )
    keep = order.take(pc.indices_nonzero(starts_run))
    return keep, rows - len(keep)


def dedupe(table: Any) -> tuple[Any, int]:
    """The table with one row per event_id (see `first_copies`), and the number dropped."""
    keep, dropped = first_copies(table)
    return table.take(keep), dropped


def partition_order(events: Any) -> tuple[Any, int]:
    """The rows of the partition, as indices into `events`: one copy of each event, ordered
    by tenant then time (so Athena can skip other tenants' row groups). Also the number of
    duplicates left out."""
    import pyarrow.compute as pc

    keep, dropped = first_copies(events)
    keys = events.select(["tenant_id", "_ts", "event_id"]).take(keep)
    order = pc.sort_indices(
        keys,
        sort_keys=[("tenant_id", "ascending"), ("_ts", "ascending"), ("event_id", "ascending")],
    )
    return keep.take(order), dropped


def curated_slices(events: Any, order: Any, day: date, rows_per_slice: int) -> Iterator[Any]:
    """The partition's rows in slices: table columns, then the string partition columns.

    Rows are gathered slice by slice, so only one slice exists beside the parsed events.
    """
    import pyarrow as pa

    step = max(1, rows_per_slice)
    values = partition_values(day)
    for start in range(0, len(order), step):
        indices = order.slice(start, step)
        columns = [events.column(name).take(indices) for name in FIELDS]
        columns += [pa.repeat(pa.scalar(value, pa.string()), len(indices)) for value in values]
        yield pa.Table.from_arrays(columns, names=[*FIELDS, *PARTITION_COLUMNS])


def curated_table(events: Any, day: date) -> Any:
    """The whole partition as one table (see `partition_order` and `curated_slices`)."""
    import pyarrow as pa

    from chalicelib.analytics.schema import curated_arrow_schema

    order, _ = partition_order(events)
    slices = list(curated_slices(events, order, day, max(1, len(order))))
    return pa.concat_tables(slices) if slices else curated_arrow_schema().empty_table()


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class Manifest:
    """What a day's partition was last built from."""

    day: str
    job_version: int
    lateness_hours: int
    early_hours: int
    inputs_digest: str
    input_objects: int
    events: int
    paths: tuple[str, ...]
    written_at: str

    def to_json(self) -> bytes:
        return json.dumps({**self.__dict__, "paths": list(self.paths)}, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        data = json.loads(raw)
        return cls(**{**data, "paths": tuple(data["paths"])})

    def describes(self, config: PartitionJobConfig, digest: str, paths: set[str]) -> bool:
        """Whether the partition as it stands is what this run would write."""
        return (
            self.job_version == JOB_VERSION
            and self.lateness_hours == config.lateness_hours
            and self.early_hours == config.early_hours
            and self.inputs_digest == digest
            and set(self.paths) == paths
        )


def read_manifest(s3: Any, config: PartitionJobConfig, day: date) -> Manifest | None:
    """The day's manifest, or None if there is none (or it cannot be read)."""
    from botocore.exceptions import ClientError

    key = config.layout.manifest_key(day)
    try:
        raw = s3.get_object(Bucket=config.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    try:
        return Manifest.from_json(raw)
    except (ValueError, TypeError, KeyError):
        logger.warning("unreadable partition manifest; rebuilding", extra={"day": str(day)})
        return None


def partition_objects(s3: Any, config: PartitionJobConfig, day: date) -> set[str]:
    """The s3:// paths of the objects in the day's partition now."""
    prefix = config.layout.partition_prefix(day)
    paths: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=config.bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            paths.add(f"s3://{config.bucket}/{item['Key']}")
    return paths


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class PartitionResult:
    """What one run did for one day."""

    day: date
    status: Status
    input_objects: int
    input_bytes: int
    lines: int
    events: int
    duplicates: int
    invalid_lines: int
    other_days: int  # events in the window stamped on a neighbouring day (that day's job)
    orphaned: Mapping[str, int]  # events no day's window reaches: rerun that day wider
    paths: tuple[str, ...]
    seconds: float

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (the scheduled functions return it; logs carry it)."""
        return {
            "day": self.day.isoformat(),
            "status": self.status,
            "input_objects": self.input_objects,
            "input_bytes": self.input_bytes,
            "lines": self.lines,
            "events": self.events,
            "duplicates": self.duplicates,
            "invalid_lines": self.invalid_lines,
            "other_days": self.other_days,
            "orphaned": dict(self.orphaned),
            "files": len(self.paths),
            "seconds": round(self.seconds, 3),
        }


def job(
    *,
    day: date,
    now: datetime,
    config: PartitionJobConfig,
    s3: Any = None,
    boto3_session: Any = None,
    force: bool = False,
    allow_shrink: bool = False,
    progress: Progress | None = None,
) -> PartitionResult:
    """Rebuild `day`'s partition from every raw and fallback event of that UTC day.

    Idempotent: the same inputs give the same partition, and a run whose inputs match the
    day's manifest changes nothing (`force` rebuilds anyway). A rebuild that would hold fewer
    events than the last one (raw objects deleted?) is refused unless `allow_shrink`.
    """
    started = time.monotonic()
    say = progress or (lambda message: logger.info(message, extra={"day": day.isoformat()}))
    if day > now.astimezone(UTC).date():
        raise PartitionJobError(f"{day} is in the future")
    if s3 is None:
        import boto3

        s3 = (boto3_session or boto3.session.Session()).client("s3")

    objects = list_sources(s3, config, day)
    digest = inputs_digest(objects)
    input_bytes = sum(obj.size for obj in objects)
    existing = partition_objects(s3, config, day)
    manifest = read_manifest(s3, config, day)
    if manifest is not None and not force and manifest.describes(config, digest, existing):
        say(f"{day}: unchanged ({len(objects)} input objects, {manifest.events} events)")
        return PartitionResult(
            day=day,
            status="unchanged",
            input_objects=len(objects),
            input_bytes=input_bytes,
            lines=0,
            events=manifest.events,
            duplicates=0,
            invalid_lines=0,
            other_days=0,
            orphaned={},
            paths=manifest.paths,
            seconds=time.monotonic() - started,
        )

    say(f"{day}: reading {len(objects)} objects ({input_bytes / 1e6:.1f} MB)")
    _use_returning_allocator()
    rows = _read_window(s3, config, day, objects, say)
    events = _day_events(rows)
    order, duplicates = partition_order(events)
    count = len(order)
    say(
        f"{day}: {rows.lines} lines, {count} events, {duplicates} duplicates dropped, "
        f"{rows.invalid_count} invalid lines"
    )
    if not allow_shrink:
        previous = manifest.events if manifest is not None else 0
        if count < previous or (count == 0 and existing):
            raise PartitionJobError(
                f"{day}: the inputs now hold {count} events but the partition was built from "
                f"{previous or 'some'}; raw objects may have been deleted. Nothing was changed "
                "(rerun with allow_shrink to accept the smaller partition)."
            )

    if count:
        slices = curated_slices(events, order, day, config.max_rows_per_file)
        paths = write_partition(slices, config, boto3_session)
        status: Status = "written"
    else:
        for path in sorted(existing):
            s3.delete_object(Bucket=config.bucket, Key=path.split("/", 3)[3])
        paths, status = (), "empty"
    new_manifest = Manifest(
        day=day.isoformat(),
        job_version=JOB_VERSION,
        lateness_hours=config.lateness_hours,
        early_hours=config.early_hours,
        inputs_digest=digest,
        input_objects=len(objects),
        events=count,
        paths=paths,
        written_at=now.astimezone(UTC).isoformat(),
    )
    s3.put_object(
        Bucket=config.bucket,
        Key=config.layout.manifest_key(day),
        Body=new_manifest.to_json(),
        ContentType="application/json",
    )
    result = PartitionResult(
        day=day,
        status=status,
        input_objects=len(objects),
        input_bytes=input_bytes,
        lines=rows.lines,
        events=count,
        duplicates=duplicates,
        invalid_lines=rows.invalid_count,
        other_days=rows.other_days,
        orphaned=dict(rows.orphaned),
        paths=paths,
        seconds=time.monotonic() - started,
    )
    _report(result, rows.invalid)
    say(f"{day}: {status}, {len(paths)} file(s) in {result.seconds:.1f}s")
    return result


def _use_returning_allocator() -> None:
    """Make Arrow give freed memory back to the system at once, for the rest of this process.

    Arrow's default allocator keeps freed memory for reuse, mostly by the thread that freed
    it; the reader threads' memory then sits unused while the single-threaded steps allocate
    more, and the peak grows (bench/partition_maintenance.py measures it). jemalloc with no
    decay returns it; malloc is the fallback where pyarrow was built without jemalloc. The job
    runs in a process of its own (Lambda, the local stack's child process, the CLI), so
    changing the process-wide default there is safe.
    """
    import pyarrow as pa

    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(0)
    except NotImplementedError:
        pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)


def _read_window(
    s3: Any, config: PartitionJobConfig, day: date, objects: Sequence[SourceObject], say: Progress
) -> _DayRows:
    """Fetch and parse the objects concurrently; keep the day's rows, count the rest."""
    rows = _DayRows()
    if not objects:
        return rows
    chunks: dict[int, Any] = {}
    last_report = time.monotonic()

    def read(index: int) -> tuple[int, Any, int, list[InvalidLine], int, Counter[date]]:
        obj = objects[index]
        body = s3.get_object(Bucket=config.bucket, Key=obj.key)["Body"].read()
        table, lines, invalid, invalid_count = parse_events(
            body, key=obj.key, source_rank=SOURCES.index(obj.source), object_index=index
        )
        on_day, others = split_by_day(table, day)
        return index, on_day, lines, invalid, invalid_count, others

    with ThreadPoolExecutor(max_workers=max(1, config.read_concurrency)) as pool:
        futures = [pool.submit(read, index) for index in range(len(objects))]
        for done, future in enumerate(as_completed(futures), start=1):
            index, on_day, lines, invalid, invalid_count, others = future.result()
            chunks[index] = on_day
            rows.lines += lines
            rows.invalid_count += invalid_count
            rows.invalid.extend(invalid[: max(0, REPORTED_INVALID_LINES - len(rows.invalid))])
            for other_day, count in others.items():
                rows.other_days += count
                if not in_window(
                    objects[index].hour, other_day, config.lateness_hours, config.early_hours
                ):
                    rows.orphaned[other_day.isoformat()] += count
            if time.monotonic() - last_report >= PROGRESS_INTERVAL_S or done == len(objects):
                last_report = time.monotonic()
                say(f"{day}: read {done}/{len(objects)} objects, {rows.lines} lines")
    rows.tables = [chunks[index] for index in sorted(chunks)]
    return rows


def _day_events(rows: _DayRows) -> Any:
    """Everything read for the day as one table (the per-object tables, not copied)."""
    import pyarrow as pa

    tables, rows.tables = rows.tables, []
    nonempty = [table for table in tables if table.num_rows]
    return pa.concat_tables(nonempty) if nonempty else event_schema().empty_table()


def write_partition(
    slices: Iterable[Any], config: PartitionJobConfig, boto3_session: Any
) -> tuple[str, ...]:
    """Replace the day's partition with the rows of `slices` (Arrow tables, one Parquet file
    each) and register it in Glue; return the new paths.

    The first slice replaces the partition (`overwrite_partitions`), the others are appended.
    awswrangler copies what it is given a few times on its way to Parquet, so slicing bounds
    that to one file's rows. If a later slice fails, the manifest is not written and the next
    run rebuilds the day.
    """
    import awswrangler as wr
    import pandas as pd
    import pyarrow as pa

    def pandas_type(arrow: Any) -> Any:
        # Types awswrangler maps to the Glue types without converting the data again.
        if pa.types.is_string(arrow):
            return pd.StringDtype("pyarrow")
        if pa.types.is_int64(arrow):
            return pd.Int64Dtype()
        if pa.types.is_int32(arrow):
            return pd.Int32Dtype()
        if pa.types.is_decimal(arrow):
            return pd.ArrowDtype(arrow)
        return None

    paths: list[str] = []
    for number, part in enumerate(slices):
        frame = part.to_pandas(types_mapper=pandas_type)
        del part
        written = wr.s3.to_parquet(
            frame,
            path=config.curated_path,
            dataset=True,
            mode="overwrite_partitions" if number == 0 else "append",
            database=config.database,
            table=config.table,
            partition_cols=list(PARTITION_COLUMNS),
            dtype={**GLUE_COLUMN_TYPES, **dict.fromkeys(PARTITION_COLUMNS, "string")},
            schema_evolution=False,  # the table is defined in analytics_infra/, never here
            compression="snappy",
            boto3_session=boto3_session,
        )
        del frame
        paths.extend(written["paths"])
    return tuple(sorted(paths))


def _report(result: PartitionResult, invalid: Sequence[InvalidLine]) -> None:
    logger.info("usage partition maintained", extra={"partition": result.summary()})
    if invalid:
        logger.error(
            "usage lines that are not valid events were left out of the partition",
            extra={
                "day": result.day.isoformat(),
                "invalid_lines": result.invalid_lines,
                "examples": [f"{line.key}:{line.line}: {line.reason}" for line in invalid],
            },
        )
    if result.orphaned:
        logger.error(
            "events found outside their day's window; rebuild those days with a larger "
            "lateness window (meterctl backfill --lateness-hours)",
            extra={"day": result.day.isoformat(), "orphaned": dict(result.orphaned)},
        )
