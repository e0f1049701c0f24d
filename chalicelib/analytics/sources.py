"""The source objects of a UTC day (raw Firehose hours and fallback events) and the record of
which of them a generation of the day's partition was built from."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from chalicelib.aws_errors import is_not_found
from chalicelib.layout import BucketLayout, day_path, hour_of_key

T = TypeVar("T")

# Firehose names an object after the arrival hour of its oldest record, and a buffer can
# carry the next hour's first records: the hour before a day can hold that day's first events.
EARLY_HOURS = 1
# Events reach Firehose after their timestamp (the model call, resends with backoff): the
# hours after the day that are read for stragglers.
DEFAULT_LATENESS_HOURS = 2
SOURCES: tuple[str, ...] = ("raw", "fallback")


@dataclass(frozen=True)
class SourceObject:
    """One object that may hold events of the day being curated."""

    source: str  # "raw" (Firehose) or "fallback" (the recorder's own writes)
    key: str
    etag: str
    size: int
    hour: datetime  # the hour in its key: arrival hour for raw, event hour for fallback

    @property
    def identity(self) -> tuple[str, str]:
        """What makes it the same object on the next run: its key and content tag."""
        return self.key, self.etag


def source_hours(
    day: date, lateness_hours: int, early_hours: int = EARLY_HOURS
) -> tuple[datetime, ...]:
    """The UTC hours whose objects can hold events stamped on `day`, in order."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=early_hours)
    return tuple(start + timedelta(hours=n) for n in range(early_hours + 24 + lateness_hours))


def in_window(hour: datetime, day: date, lateness_hours: int, early_hours: int) -> bool:
    """Whether the objects of `hour` are read when `day` is curated."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return (
        start - timedelta(hours=early_hours) <= hour < start + timedelta(hours=24 + lateness_hours)
    )


def list_sources(
    s3: Any,
    bucket: str,
    layout: BucketLayout,
    day: date,
    *,
    lateness_hours: int,
    early_hours: int = EARLY_HOURS,
) -> list[SourceObject]:
    """Every raw and fallback object under the hours that can hold `day`'s events, sorted by
    source then key (that order numbers them for the copy rule)."""
    hours = set(source_hours(day, lateness_hours, early_hours))
    day_prefixes = sorted({day_path(hour) for hour in hours})
    found: list[SourceObject] = []
    for source in SOURCES:
        prefix = layout.raw_prefix if source == "raw" else layout.fallback_prefix
        for day_prefix in day_prefixes:
            paginator = s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix + day_prefix):
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


def fetch_all(
    objects: Sequence[T], fetch: Callable[[T], Any], concurrency: int
) -> Iterator[tuple[T, Any]]:
    """(object, fetch(object)) as each finishes, at most `concurrency` fetches in flight.

    Bounding what is in flight (rather than submitting everything) is what keeps a day of
    thousands of objects within a fixed amount of memory; taking results as they finish
    (rather than in order) keeps every reader busy behind a slow object.
    """
    if not objects:
        return
    upcoming = iter(objects)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        pending: dict[Future[Any], T] = {}
        for obj in upcoming:
            pending[pool.submit(fetch, obj)] = obj
            if len(pending) >= concurrency:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                obj = pending.pop(future)
                following = next(upcoming, None)
                if following is not None:
                    pending[pool.submit(fetch, following)] = following
                yield obj, future.result()


# --------------------------------------------------------------------------- what was read


@dataclass(frozen=True)
class SourceManifest:
    """The source objects a generation holds every event of (key -> ETag)."""

    day: str
    objects: tuple[tuple[str, str], ...]

    def identities(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.objects)

    def keys(self) -> frozenset[str]:
        return frozenset(key for key, _etag in self.objects)

    def with_objects(self, more: Iterable[SourceObject]) -> SourceManifest:
        merged = dict(self.objects)
        merged.update(obj.identity for obj in more)
        return SourceManifest(self.day, tuple(sorted(merged.items())))

    def to_bytes(self) -> bytes:
        document = {"day": self.day, "objects": [list(pair) for pair in self.objects]}
        return gzip.compress(json.dumps(document, separators=(",", ":")).encode(), mtime=0)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SourceManifest:
        document = json.loads(gzip.decompress(raw))
        return cls(document["day"], tuple((k, e) for k, e in document["objects"]))


def read_manifest(s3: Any, bucket: str, key: str) -> SourceManifest | None:
    """A generation's source manifest; None if it is gone (the day is then rebuilt whole)."""
    from botocore.exceptions import ClientError

    try:
        raw = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    return SourceManifest.from_bytes(raw)


def write_manifest(s3: Any, bucket: str, key: str, manifest: SourceManifest) -> None:
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=manifest.to_bytes(),
        ContentType="application/json",
        ContentEncoding="gzip",
    )
