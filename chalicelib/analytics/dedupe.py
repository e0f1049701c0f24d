"""One row per event_id: stable id buckets, spilling rows by bucket, and the copy kept."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

# The bucket of an event id is part of the curated layout (the budget repair finds an event's
# file from its id), so the hash is defined here, not borrowed from a library that may change it.
HASH_NAME = "poly64-fmix"
_MULTIPLIER = 0x100000001B3  # FNV's 64-bit prime, as the polynomial's base
_FMIX_1 = 0xFF51AFD7ED558CCD
_FMIX_2 = 0xC4CEB9FE1A85EC53

# Where an event can come from; the index is its rank when two new copies tie on timestamp.
SOURCES: tuple[str, ...] = ("raw", "fallback")
# Columns a spilled row carries besides the event: which run it is from (0: already curated,
# 1: read now), where it was read, so the copy kept never depends on the order of reading.
ORIGIN_COLUMNS = ("_rank", "_src", "_obj", "_line")
CURATED_RANK, NEW_RANK = 0, 1


def id_hashes(ids: Any) -> Any:
    """64-bit hashes of string ids (a pyarrow array or chunked array), as a numpy uint64 array.

    A polynomial over the UTF-8 bytes with fixed powers, then MurmurHash3's finaliser: the same
    id gives the same hash in every process, version and machine, and it runs vectorised.
    """
    import numpy as np
    import pyarrow as pa

    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    if len(ids) == 0:
        return np.zeros(0, dtype=np.uint64)
    binary = ids.cast(pa.binary())
    _validity, offsets_buffer, data_buffer = binary.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[
        binary.offset : binary.offset + len(binary) + 1
    ].astype(np.int64)
    lengths = np.diff(offsets)
    first, last = int(offsets[0]), int(offsets[-1])
    hashes = np.zeros(len(binary), dtype=np.uint64)
    width = int(lengths[0])
    if last > first and bool((lengths == width).all()):
        # Ids of one length (uuids, as the chat path makes them): one row of bytes per id, so
        # the sums are one matrix-vector product, without the per-byte position arrays (about
        # 5x faster; uint64 arithmetic wraps the same way in both).
        block = np.frombuffer(data_buffer, dtype=np.uint8)[first:last].reshape(-1, width)
        hashes = block.astype(np.uint64) @ _powers(width)
    elif last > first:
        data = np.frombuffer(data_buffer, dtype=np.uint8)[first:last].astype(np.uint64)
        starts = offsets[:-1] - first
        positions = np.arange(last - first, dtype=np.int64) - np.repeat(starts, lengths)
        powers = _powers(int(lengths.max()))
        weighted = data * powers[positions]
        nonempty = lengths > 0
        sums = np.add.reduceat(weighted, starts[nonempty])
        hashes[nonempty] = sums
    hashes ^= lengths.astype(np.uint64)
    return _fmix(hashes)


def _powers(length: int) -> Any:
    import numpy as np

    powers = np.empty(max(1, length), dtype=np.uint64)
    value = 1
    for position in range(len(powers)):
        value = (value * _MULTIPLIER) & 0xFFFFFFFFFFFFFFFF
        powers[position] = value
    return powers


def _fmix(hashes: Any) -> Any:
    import numpy as np

    with np.errstate(over="ignore"):
        hashes ^= hashes >> np.uint64(33)
        hashes *= np.uint64(_FMIX_1)
        hashes ^= hashes >> np.uint64(33)
        hashes *= np.uint64(_FMIX_2)
        hashes ^= hashes >> np.uint64(33)
    return hashes


def bucket_of(event_id: str, buckets: int) -> int:
    """The bucket of one event id among `buckets` (what `id_hashes` gives for it)."""
    import pyarrow as pa

    return int(id_hashes(pa.array([event_id], pa.string()))[0] % buckets)


def bucket_count(rows: int, rows_per_bucket: int, at_least: int = 1) -> int:
    """A power of two of buckets so each holds about `rows_per_bucket` rows, never fewer than
    `at_least` (a power of two too: a bucket then splits into whole buckets, never merges)."""
    wanted = max(1, math.ceil(rows / max(1, rows_per_bucket)))
    return max(at_least, 1 << (wanted - 1).bit_length())


# --------------------------------------------------------------------------- spilling


class BucketSpill:
    """Rows appended by event-id bucket to Arrow IPC files in a local directory (Lambda's /tmp).

    Rows are held per bucket until `buffer_bytes` are buffered in all, then written as one
    record batch per bucket, so memory stays bounded whatever the day's size. Uncompressed, a
    row takes about 320 bytes of disk; `compression="lz4"` halves that for about 15% more CPU
    in the whole job ("zstd": a quarter, for more still).
    """

    def __init__(
        self,
        directory: str,
        buckets: int,
        schema: Any,
        *,
        buffer_bytes: int = 64 << 20,
        compression: str | None = None,
    ) -> None:
        import pyarrow as pa

        self.buckets = buckets
        self.schema = schema
        self._paths = [os.path.join(directory, f"bucket-{n:04d}.arrow") for n in range(buckets)]
        self._writers: list[Any] = [None] * buckets
        self._pending: list[list[Any]] = [[] for _ in range(buckets)]
        self._pending_bytes = 0
        self._buffer_bytes = buffer_bytes
        self._options = pa.ipc.IpcWriteOptions(compression=compression)
        self.rows = [0] * buckets
        self.bytes_written = 0

    def add(self, table: Any) -> None:
        """Append rows (with `event_id`), each to its bucket."""
        self.add_parts(self.partition(table))

    def partition(self, table: Any) -> list[tuple[int, Any]]:
        """The rows split by bucket, (bucket, rows) for each bucket that has some. It touches
        no state, so reader threads call it and only `add_parts` runs one at a time."""
        import numpy as np

        if table.num_rows == 0:
            return []
        bucket = (id_hashes(table.column("event_id")) % np.uint64(self.buckets)).astype(np.int64)
        if self.buckets == 1:
            return [(0, table)]
        order = np.argsort(bucket, kind="stable")
        counts = np.bincount(bucket, minlength=self.buckets)
        ordered = table.take(order)
        parts = []
        start = 0
        for number, count in enumerate(counts.tolist()):
            if count:
                parts.append((number, ordered.slice(start, count)))
                start += count
        return parts

    def add_parts(self, parts: list[tuple[int, Any]]) -> None:
        """Append what `partition` split."""
        for number, part in parts:
            self._pending[number].append(part)
            self._pending_bytes += part.nbytes
            self.rows[number] += part.num_rows
        if self._pending_bytes >= self._buffer_bytes:
            self.flush()

    def flush(self) -> None:
        """Write every bucket's buffered rows."""
        import pyarrow as pa

        for number, parts in enumerate(self._pending):
            if not parts:
                continue
            if self._writers[number] is None:
                self._writers[number] = pa.ipc.new_file(
                    self._paths[number], self.schema, options=self._options
                )
            # Chunks are written as they are: combining them first would copy every row again.
            self._writers[number].write_table(pa.concat_tables(parts))
            self._pending[number] = []
        self._pending_bytes = 0

    def close(self) -> None:
        """Flush and close every file (the spill is then read bucket by bucket)."""
        self.flush()
        for writer in self._writers:
            if writer is not None:
                writer.close()
        self._writers = [None] * self.buckets
        self.bytes_written = sum(os.path.getsize(p) for p in self._paths if os.path.exists(p))

    def read(self, number: int) -> Any:
        """Every row spilled to bucket `number` (an empty table if none)."""
        import pyarrow as pa

        path = self._paths[number]
        if not os.path.exists(path):
            return self.schema.empty_table()
        with pa.memory_map(path) as source:
            return pa.ipc.open_file(source).read_all()

    def discard(self, number: int) -> None:
        """Delete a bucket's file once it has been merged (frees /tmp as the job goes)."""
        if os.path.exists(self._paths[number]):
            os.remove(self._paths[number])


# --------------------------------------------------------------------------- the copy kept


def first_copies(table: Any) -> tuple[Any, int]:
    """Row indices of one copy per event_id, and how many copies were dropped.

    The copy kept: one already curated (rank 0) over one read now, then the earliest by
    timestamp, raw before fallback, object key, line. The choice does not depend on the order
    the objects were read in, so two runs over the same inputs write the same rows.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = table.num_rows
    if rows == 0:
        return pa.array([], pa.uint64()), 0
    order = pc.sort_indices(
        table.select(["event_id", *ORIGIN_COLUMNS[:1], "_ts", *ORIGIN_COLUMNS[1:]]),
        sort_keys=[
            ("event_id", "ascending"),
            ("_rank", "ascending"),
            ("_ts", "ascending"),
            ("_src", "ascending"),
            ("_obj", "ascending"),
            ("_line", "ascending"),
        ],
    )
    ids = table.column("event_id").take(order)
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    starts_run = pa.concat_arrays(
        [pa.array([True]), pc.not_equal(ids.slice(1), ids.slice(0, rows - 1))]
    )
    keep = order.take(pc.indices_nonzero(starts_run))
    return keep, rows - len(keep)


def partition_rows(table: Any) -> tuple[Any, int]:
    """One copy of each event (see `first_copies`), ordered by tenant then time then id (so
    Athena and the budget repair skip other tenants' row groups), and the number dropped."""
    import pyarrow.compute as pc

    keep, dropped = first_copies(table)
    keys = table.select(["tenant_id", "_ts", "event_id"]).take(keep)
    order = pc.sort_indices(
        keys,
        sort_keys=[("tenant_id", "ascending"), ("_ts", "ascending"), ("event_id", "ascending")],
    )
    # One gather of every column, in the final order (gathering twice copies every row twice).
    return table.take(keep.take(order)), dropped


def split_by_day(table: Any, day: date) -> tuple[Any, dict[date, Any]]:
    """The rows stamped on `day`, and each other day's rows in the table."""
    import pyarrow as pa
    import pyarrow.compute as pc

    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    kind = pa.timestamp("us", tz="UTC")
    stamps = table.column("_ts")
    on_day = pc.and_(
        pc.greater_equal(stamps, pa.scalar(start, kind)),
        pc.less(stamps, pa.scalar(start + timedelta(days=1), kind)),
    )
    others: dict[date, Any] = {}
    if pc.all(on_day).as_py() is not False:  # every row (or none): nothing to copy
        return table, others
    if table.num_rows:
        rest = table.filter(pc.invert(on_day))
        days = pc.cast(rest.column("_ts"), pa.date32())
        for other in pc.unique(days).to_pylist():
            others[other] = rest.filter(pc.equal(days, pa.scalar(other, pa.date32())))
    return table.filter(on_day), others


def with_origin(table: Any, rank: int, source: int, obj: int) -> Any:
    """Event rows with the origin columns the copy rule reads."""
    import pyarrow as pa

    rows = table.num_rows
    table = table.append_column("_rank", pa.repeat(pa.scalar(rank, pa.int8()), rows))
    table = table.append_column("_src", pa.repeat(pa.scalar(source, pa.int8()), rows))
    table = table.append_column("_obj", pa.repeat(pa.scalar(obj, pa.int32()), rows))
    return table.select([*table.schema.names[:-4], "_rank", "_src", "_obj", "_line"])


def spill_schema(event_schema: Any) -> Any:
    """The spilled rows: the parsed event columns and the origin columns."""
    import pyarrow as pa

    fields = [f for f in event_schema if f.name != "_line"]
    return pa.schema(
        [
            *fields,
            pa.field("_rank", pa.int8()),
            pa.field("_src", pa.int8()),
            pa.field("_obj", pa.int32()),
            pa.field("_line", pa.int32()),
        ]
    )


def concat(tables: Iterable[Any], schema: Any) -> Any:
    """Tables of one schema as one (an empty table of the schema if there are none)."""
    import pyarrow as pa

    parts = [t for t in tables if t.num_rows]
    return pa.concat_tables(parts) if parts else schema.empty_table()
