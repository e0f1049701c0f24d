"""Find usage events by id for the budget repair, reading as little as the layout allows.

An event is looked for, in order: in the fallback location (one object per event, under its
own hour: a listing of that hour names it); in its day's committed generation (its id names
the bucket file, and the file's row-group statistics on tenant_id and timestamp name the row
group, so one small ranged read finds it); and only then in the raw objects of the hours that
can hold it (the hour before its own, its own, the next) that the committed generation does not
hold yet (minutes of data, not hours). Every
wanted event of every tenant is looked up in one pass, so each object is read at most once.
A day without a committed generation is read from raw, as before curation existed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from chalicelib.analytics.dedupe import HASH_NAME, bucket_of
from chalicelib.analytics.parsing import InvalidEventError, parse_line
from chalicelib.analytics.sources import EARLY_HOURS, read_manifest
from chalicelib.analytics.state import CurationStateStore, Generation
from chalicelib.aws_errors import is_not_found
from chalicelib.errors import MeteringError
from chalicelib.layout import BucketLayout
from chalicelib.pricing import format_usd
from chalicelib.usage import FIELDS, UsageEventRecord, format_timestamp

logger = logging.getLogger(__name__)

# Hours around an event's own hour whose raw objects can hold it: Firehose names an object
# after the arrival of its oldest record, so a buffer opened in the hour before can carry it,
# and a record arrives after its timestamp, so the next hour's objects can too.
RAW_HOURS_BEFORE = EARLY_HOURS
RAW_HOURS_AFTER = 1


class EventLookupError(MeteringError):
    """The usage events could not be read; try again on the next run."""


@dataclass(frozen=True)
class EventRef:
    """A usage event to find: its id, its tenant and its exact timestamp."""

    event_id: str
    tenant_id: str
    timestamp: datetime


@dataclass
class Lookup:
    """What a lookup found, and what it had to skip or read."""

    events: dict[str, UsageEventRecord] = field(default_factory=dict)
    malformed_lines: int = 0  # lines that mention a wanted id but are not valid events
    bytes_read: int = 0
    objects_read: int = 0


class CuratedEventFinder:
    """Finds events in the analytics bucket: fallback, curated Parquet, then uncurated raw."""

    def __init__(
        self,
        *,
        bucket: str,
        layout: BucketLayout,
        s3: Any,
        state: CurationStateStore | None,
    ) -> None:
        self._bucket = bucket
        self._layout = layout
        self._s3 = s3
        self._state = state

    def find(self, refs: Sequence[EventRef]) -> Lookup:
        """The events among `refs` that exist (EventLookupError if they cannot be read)."""
        from botocore.exceptions import BotoCoreError, ClientError

        lookup = Lookup()
        try:
            remaining = self._from_fallback(refs, lookup)
            by_day: dict[date, list[EventRef]] = defaultdict(list)
            for ref in remaining:
                by_day[ref.timestamp.date()].append(ref)
            held: dict[date, frozenset[str]] = {}
            for day, wanted in sorted(by_day.items()):
                held[day] = self._from_curated(day, wanted, lookup)
            missing = [ref for ref in remaining if ref.event_id not in lookup.events]
            self._from_raw(missing, held, lookup)
        except (ClientError, BotoCoreError) as exc:
            raise EventLookupError(f"usage events unreadable: {type(exc).__name__}") from exc
        return lookup

    # -- fallback -------------------------------------------------------------------------

    def _from_fallback(self, refs: Sequence[EventRef], lookup: Lookup) -> list[EventRef]:
        wanted_by_hour: dict[datetime, dict[str, EventRef]] = defaultdict(dict)
        for ref in refs:
            hour = ref.timestamp.replace(minute=0, second=0, microsecond=0)
            wanted_by_hour[hour][self._layout.fallback_key(ref.event_id, ref.timestamp)] = ref
        for hour, wanted in wanted_by_hour.items():
            for key in self._keys(self._layout.fallback_hour_prefix(hour)):
                found = wanted.get(key)
                if found is not None:
                    body = self._get(key, lookup)
                    self._match(body.splitlines(), {found.event_id}, lookup)
        return [ref for ref in refs if ref.event_id not in lookup.events]

    # -- curated ----------------------------------------------------------------------------

    def _from_curated(self, day: date, refs: list[EventRef], lookup: Lookup) -> frozenset[str]:
        """Look in the day's committed generation; return the raw keys it holds."""
        generation = self._generation(day)
        if generation is None:
            return frozenset()
        manifest = read_manifest(self._s3, self._bucket, generation.manifest_key)
        if manifest is None:
            return frozenset()
        files = {self._layout.bucket_of_file(key): key for key in generation.files}
        by_file: dict[str, list[EventRef]] = defaultdict(list)
        for ref in refs:
            key = files.get(bucket_of(ref.event_id, generation.buckets))
            if key is not None:
                by_file[key].append(ref)
        for key, wanted in sorted(by_file.items()):
            self._search_file(key, wanted, lookup)
        return manifest.keys()

    def _generation(self, day: date) -> Generation | None:
        if self._state is None:
            return None
        try:
            generation = self._state.read(day).committed
        except Exception as exc:  # the state is an index: without it, read raw as before
            logger.warning(
                "curation state unreadable; looking in raw objects only",
                extra={"day": day.isoformat(), "error": type(exc).__name__},
            )
            return None
        if generation is None or generation.hash_name != HASH_NAME or not generation.files:
            return None
        return generation

    def _search_file(self, key: str, refs: list[EventRef], lookup: Lookup) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from chalicelib.analytics.curated import S3RangeFile, conform

        source = S3RangeFile(self._s3, self._bucket, key)
        try:
            parquet = pq.ParquetFile(source)
            wanted = pa.array([ref.event_id for ref in refs], pa.string())
            read: set[int] = set()
            # By tenant and time first; an event not found so (its timestamp written in
            # another form than the reservation's) is looked for by tenant alone.
            for by_time in (True, False):
                missing = [ref for ref in refs if ref.event_id not in lookup.events]
                groups = _candidate_groups(parquet.metadata, missing, by_time=by_time)
                for group in sorted(set(groups) - read):
                    read.add(group)
                    rows = conform(parquet.read_row_group(group))
                    hits = rows.filter(pc.is_in(rows.column("event_id"), value_set=wanted))
                    for row in hits.to_pylist():
                        lookup.events[row["event_id"]] = _record(row)
        finally:
            lookup.bytes_read += source.bytes_read
            lookup.objects_read += 1

    # -- raw ----------------------------------------------------------------------------------

    def _from_raw(
        self, refs: Sequence[EventRef], held: dict[date, frozenset[str]], lookup: Lookup
    ) -> None:
        """Read each raw object that may hold a missing event and is not curated yet, once."""
        wanted_by_object: dict[str, set[str]] = defaultdict(set)
        listings: dict[str, list[str]] = {}
        for ref in refs:
            hour = ref.timestamp.replace(minute=0, second=0, microsecond=0)
            curated = held.get(ref.timestamp.date(), frozenset())
            for offset in range(-RAW_HOURS_BEFORE, RAW_HOURS_AFTER + 1):
                prefix = self._layout.raw_hour_prefix(hour + timedelta(hours=offset))
                if prefix not in listings:
                    listings[prefix] = self._keys(prefix)
                for key in listings[prefix]:
                    if key not in curated:
                        wanted_by_object[key].add(ref.event_id)
        for key in sorted(wanted_by_object):
            wanted = wanted_by_object[key] - set(lookup.events)
            if wanted:
                body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"]
                lookup.objects_read += 1
                self._match(_counted(body.iter_lines(), lookup), wanted, lookup)

    # -- helpers ------------------------------------------------------------------------------

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def _get(self, key: str, lookup: Lookup) -> bytes:
        from botocore.exceptions import ClientError

        try:
            body: bytes = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if is_not_found(exc):
                return b""
            raise
        lookup.bytes_read += len(body)
        lookup.objects_read += 1
        return body

    @staticmethod
    def _match(lines: Iterable[bytes], wanted: set[str], lookup: Lookup) -> None:
        """Keep the lines that are valid events with a wanted id; count the broken ones that
        mention one (a bad line never stops the lookup of the others)."""
        needles = {event_id: event_id.encode() for event_id in wanted}
        for line in lines:
            if not any(needle in line for needle in needles.values()):
                continue
            try:
                record = parse_line(line.strip())
            except InvalidEventError:
                lookup.malformed_lines += 1
                continue
            if record["event_id"] in wanted and record["event_id"] not in lookup.events:
                lookup.events[record["event_id"]] = _record(record)


def _counted(lines: Iterable[bytes], lookup: Lookup) -> Iterable[bytes]:
    for line in lines:
        lookup.bytes_read += len(line) + 1
        yield line


def _candidate_groups(metadata: Any, refs: Sequence[EventRef], *, by_time: bool) -> list[int]:
    """Row groups whose tenant_id and timestamp statistics can hold one of the events.

    A group holding an event has that event's tenant and timestamp text between its minimum
    and maximum, whatever the order of the rows: the test never skips the right group. The
    rows are sorted by tenant then time, so it skips nearly all the others.
    """
    names = [metadata.schema.column(i).name for i in range(metadata.num_columns)]
    tenant_column, time_column = names.index("tenant_id"), names.index("timestamp")
    wanted = [(ref.tenant_id, format_timestamp(ref.timestamp)) for ref in refs]
    groups = []
    for number in range(metadata.num_row_groups):
        group = metadata.row_group(number)
        tenants = group.column(tenant_column).statistics
        times = group.column(time_column).statistics
        for tenant, moment in wanted:
            if _within(tenants, tenant) and (not by_time or _within(times, moment)):
                groups.append(number)
                break
    return groups


def _within(statistics: Any, value: str) -> bool:
    if statistics is None or not statistics.has_min_max:
        return True
    return bool(statistics.min <= value <= statistics.max)


def _record(row: dict[str, Any]) -> UsageEventRecord:
    """A curated or parsed row as the event's wire shape (cost back to its decimal text)."""
    record: dict[str, Any] = {name: row.get(name) for name in FIELDS}
    record["cost_usd"] = format_usd(row["cost_usd"])
    return UsageEventRecord(**record)  # type: ignore[typeddict-item, no-any-return]
