"""Building a day's new generation: the new objects read into a spill bucketed by event id,
then each bucket merged with the committed rows of that bucket (one copy per event_id) and
written as one Parquet file.

Memory is bounded by a bucket, not by the day: buckets are sized by ROWS_PER_BUCKET (in
chalicelib.analytics.partitions) and only MERGE_WORKERS of them are in memory at once. pyarrow
and numpy are imported inside the functions (the chat path must not load them).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.analytics import curated, quarantine
from chalicelib.analytics.dedupe import (
    CURATED_RANK,
    NEW_RANK,
    SOURCES,
    BucketSpill,
    bucket_count,
    concat,
    id_hashes,
    partition_rows,
    spill_schema,
    split_by_day,
    with_origin,
)
from chalicelib.analytics.parsing import PoisonLine, event_schema, parse_object
from chalicelib.analytics.sources import SourceObject, fetch_all, in_window
from chalicelib.analytics.state import Generation
from chalicelib.pricing import format_usd
from chalicelib.usage import FIELDS, parse_timestamp

if TYPE_CHECKING:
    from chalicelib.analytics.partitions import PartitionJobConfig

# Bytes of raw JSON per event when a day's size is guessed before reading it: on the small
# side, so the guess errs towards more, smaller buckets.
ESTIMATE_BYTES_PER_EVENT = 300
PROGRESS_INTERVAL_S = 5.0
REPORTED_POISON_LINES = 20

Progress = Callable[[str], None]


class Checkpoint(Protocol):
    """Where a long step says it is still alive (the run renews its lease there)."""

    def checkpoint(self) -> None: ...


@dataclass
class Tally:
    """What a run counted while reading and merging."""

    lines: int = 0
    duplicates: int = 0
    quarantined: int = 0
    other_days: int = 0
    orphaned: Counter[str] = field(default_factory=Counter)
    examples: list[PoisonLine] = field(default_factory=list)


@dataclass(frozen=True)
class Built:
    """What building a generation made."""

    rewritten: bool
    files: tuple[str, ...]
    buckets: int
    events: int
    added: int
    spill_bytes: int


def build_generation(
    s3: Any,
    config: PartitionJobConfig,
    day: date,
    *,
    full: bool,
    base: Generation | None,
    new: Sequence[SourceObject],
    objects: Sequence[SourceObject],
    folder: str,
    tally: Tally,
    lease: Checkpoint,
    say: Progress,
) -> Built:
    """Read the `new` objects into a bucketed spill, then merge each bucket with the committed
    rows of `base` (none for a full rebuild) and write it as one Parquet file in `folder`."""
    base = None if full else base
    old_buckets = base.buckets if base is not None else 0
    old_events = base.events if base is not None else 0
    guess = sum(obj.size for obj in new) // ESTIMATE_BYTES_PER_EVENT + len(new)
    buckets = bucket_count(old_events + guess, config.rows_per_bucket, at_least=old_buckets or 1)
    order = {obj.key: number for number, obj in enumerate(objects)}
    with tempfile.TemporaryDirectory(prefix="curate-", dir=config.spill_dir) as directory:
        spill = BucketSpill(
            directory,
            buckets,
            spill_schema(event_schema()),
            compression=config.spill_compression,
        )
        read_into(s3, config, day, new, order=order, spill=spill, tally=tally, lease=lease, say=say)
        spill.close()
        new_rows = sum(spill.rows)
        if base is not None and new_rows == 0:
            return Built(False, base.files, base.buckets, base.events, 0, spill.bytes_written)
        files, events, old_read = _merge(
            s3, config, base, buckets=buckets, spill=spill, folder=folder, tally=tally, lease=lease
        )
    events_after = events + (old_events - old_read if base is not None else 0)
    say(f"{day}: merged {new_rows} new rows into {len(files)} bucket file(s)")
    return Built(True, files, buckets, events_after, events_after - old_events, spill.bytes_written)


def read_into(
    s3: Any,
    config: PartitionJobConfig,
    day: date,
    new: Sequence[SourceObject],
    *,
    order: dict[str, int],
    spill: BucketSpill,
    tally: Tally,
    lease: Checkpoint,
    say: Progress,
) -> None:
    layout = config.layout

    def fetch(obj: SourceObject) -> tuple[Any, int, tuple[PoisonLine, ...], dict[date, Any]]:
        # In a reader thread: everything per object that needs no shared state.
        body = s3.get_object(Bucket=config.bucket, Key=obj.key)["Body"].read()
        parsed = parse_object(body, obj.key)
        del body
        on_day, others = split_by_day(parsed.table, day)
        rows = with_origin(on_day, NEW_RANK, SOURCES.index(obj.source), order[obj.key])
        return spill.partition(rows), parsed.lines, parsed.poison, others

    last_report = time.monotonic()
    for done, (obj, (rows, lines, poison, others)) in enumerate(
        fetch_all(list(new), fetch, config.read_concurrency), start=1
    ):
        tally.lines += lines
        if poison:
            tally.quarantined += len(poison)
            room = REPORTED_POISON_LINES - len(tally.examples)
            tally.examples.extend(poison[: max(0, room)])
            quarantine.write(s3, config.bucket, layout, obj.key, poison)
        for other_day, table in others.items():
            tally.other_days += table.num_rows
            if not in_window(obj.hour, other_day, config.lateness_hours, config.early_hours):
                tally.orphaned[other_day.isoformat()] += table.num_rows
                _refile(s3, config, table)
        spill.add_parts(rows)
        lease.checkpoint()
        if time.monotonic() - last_report >= PROGRESS_INTERVAL_S or done == len(new):
            last_report = time.monotonic()
            say(f"{day}: read {done}/{len(new)} objects, {tally.lines} lines")


def _refile(s3: Any, config: PartitionJobConfig, table: Any) -> None:
    """Events found outside their own day's window go where the recorder would have put them
    (fallback/, under their own hour), so their day's next run picks them up."""
    layout = config.layout
    for row in table.select(list(FIELDS)).to_pylist():
        record = {**row, "cost_usd": format_usd(row["cost_usd"])}
        key = layout.fallback_key(row["event_id"], parse_timestamp(row["timestamp"]))
        body = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        s3.put_object(Bucket=config.bucket, Key=key, Body=body, ContentType="application/json")


MERGE_WORKERS = 2  # buckets merged at once: sorting and Parquet encoding release the GIL


def _merge(
    s3: Any,
    config: PartitionJobConfig,
    base: Generation | None,
    *,
    buckets: int,
    spill: BucketSpill,
    folder: str,
    tally: Tally,
    lease: Checkpoint,
) -> tuple[tuple[str, ...], int, int]:
    """Each bucket: committed rows + spilled rows -> one copy per event -> one Parquet file.

    Buckets double, never merge, so an old bucket feeds whole new ones: bucket b of the old
    generation splits into new buckets b, b + old, b + 2 * old, ... Two groups are merged at
    a time; each holds one old bucket and its new buckets' rows, so memory stays bounded.
    """
    layout = config.layout
    old_buckets = base.buckets if base is not None else 0
    old_files: dict[int, str] = {}
    if base is not None:
        for key in base.files:
            number = layout.bucket_of_file(key)
            if number is not None:
                old_files[number] = key
    files: list[str] = []
    events = old_read = 0
    with (
        tempfile.TemporaryDirectory(prefix="parquet-", dir=config.spill_dir) as scratch,
        ThreadPoolExecutor(MERGE_WORKERS) as pool,
    ):

        def group(number: int) -> _Merged:
            children = list(range(number, buckets, old_buckets)) if old_buckets else [number]
            return _merge_group(
                s3,
                config,
                number,
                children=children,
                old_file=old_files.get(number),
                spill=spill,
                folder=folder,
                scratch=scratch,
            )

        for merged in pool.map(group, range(old_buckets or buckets)):
            files.extend(merged.files)
            events += merged.events
            old_read += merged.old_read
            tally.duplicates += merged.duplicates
            lease.checkpoint()
    return tuple(sorted(files)), events, old_read


@dataclass(frozen=True)
class _Merged:
    files: tuple[str, ...]
    events: int
    old_read: int
    duplicates: int


def _merge_group(
    s3: Any,
    config: PartitionJobConfig,
    number: int,
    *,
    children: list[int],
    old_file: str | None,
    spill: BucketSpill,
    folder: str,
    scratch: str,
) -> _Merged:
    import numpy as np
    import pyarrow as pa

    layout = config.layout
    old_parts: dict[int, Any] = {}
    old_read = 0
    if old_file is not None:
        if len(children) == 1 and spill.rows[number] == 0:
            key = layout.curated_file_key(folder, number)
            s3.copy_object(
                Bucket=config.bucket, Key=key, CopySource={"Bucket": config.bucket, "Key": old_file}
            )
            return _Merged((key,), 0, 0, 0)
        old = _committed_rows(s3, config.bucket, old_file)
        old_read = old.num_rows
        if len(children) == 1:
            old_parts[number] = old
        else:
            which = id_hashes(old.column("event_id")) % np.uint64(spill.buckets)
            for child in children:
                old_parts[child] = old.filter(pa.array(which == np.uint64(child)))
        del old
    files: list[str] = []
    events = duplicates = 0
    for child in children:
        old_part = old_parts.pop(child, None)
        parts = [spill.read(child)] if old_part is None else [old_part, spill.read(child)]
        table = concat(parts, spill.schema)
        del parts, old_part
        spill.discard(child)
        if table.num_rows == 0:
            continue
        rows, dropped = partition_rows(table)
        del table
        duplicates += dropped
        events += rows.num_rows
        path = os.path.join(scratch, f"part-{child:04d}.parquet")
        curated.write_parquet(rows, path)
        del rows
        key = layout.curated_file_key(folder, child)
        curated.upload(s3, config.bucket, key, path)
        os.remove(path)
        files.append(key)
    return _Merged(tuple(files), events, old_read, duplicates)


def _committed_rows(s3: Any, bucket: str, key: str) -> Any:
    """A committed bucket file's rows, with the columns the copy rule reads."""
    import pyarrow as pa

    rows = curated.read_curated(s3, bucket, key)
    rows = rows.append_column("_ts", curated.instants(rows.column("timestamp")))
    rows = rows.append_column("_line", pa.repeat(pa.scalar(0, pa.int32()), rows.num_rows))
    return with_origin(rows, CURATED_RANK, 0, 0)
