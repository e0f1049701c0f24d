"""The analytics bucket's key layout: raw and fallback hours, curated generations, manifests,
quarantine."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

# Firehose's default object prefix, without prefix expressions so that moto and AWS agree:
# the UTC hour a record arrived. Fallback objects copy it with the event's own hour.
HOUR_FORMAT = "%Y/%m/%d/%H"
_HOUR_PATH_LENGTH = len("YYYY/MM/DD/HH/")
# Hive-style partition directories, which Glue and Athena read as year/month/day strings.
_BUCKET_FILE = re.compile(r"/part-(\d{4})\.snappy\.parquet$")
_PARTITION_PATH = re.compile(r"(?:^|/)year=(\d{4})/month=(\d{2})/day=(\d{2})/")


def hour_path(hour: datetime) -> str:
    """`YYYY/MM/DD/HH/`: the folder of an hour's objects."""
    return f"{hour:{HOUR_FORMAT}}/"


def day_path(day: date) -> str:
    """`YYYY/MM/DD/`: the folder holding a day's 24 hour folders."""
    return f"{day:%Y/%m/%d}/"


def hour_of_key(key: str, prefix: str) -> datetime | None:
    """The `YYYY/MM/DD/HH/` hour an object key sits under right after `prefix`, or None."""
    if not key.startswith(prefix):
        return None
    stamp = key[len(prefix) : len(prefix) + _HOUR_PATH_LENGTH]
    if len(stamp) != _HOUR_PATH_LENGTH or not stamp.endswith("/"):
        return None
    try:
        return datetime.strptime(stamp[:-1], HOUR_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def partition_values(day: date) -> tuple[str, str, str]:
    """The string values of the `year`, `month` and `day` partition columns for a UTC day."""
    return f"{day:%Y}", f"{day:%m}", f"{day:%d}"


def partition_path(day: date) -> str:
    """The Hive-style partition folder of a UTC day, relative to the table location."""
    year, month, day_of_month = partition_values(day)
    return f"year={year}/month={month}/day={day_of_month}/"


def partition_of_path(path: str) -> tuple[str, str, str] | None:
    """(`year`, `month`, `day`) of a path relative to the table location, if it has them."""
    match = _PARTITION_PATH.search(path)
    if match is None:
        return None
    year, month, day = match.groups()
    return year, month, day


def s3_url(bucket: str, key: str) -> str:
    """`s3://<bucket>/<key>`."""
    return f"s3://{bucket}/{key}"


def split_s3_url(url: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://bucket/key` URL; ValueError for anything else."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    return bucket, key


@dataclass(frozen=True)
class BucketLayout:
    """Where each kind of object lives in the analytics bucket (every prefix ends with "/").

    The raw, fallback and curated prefixes are the stage's settings (RAW_PREFIX,
    FALLBACK_PREFIX, CURATED_PREFIX); the defaults are the documented ones.
    """

    raw_prefix: str = "raw/"  # Firehose's objects: newline-delimited events, by arrival hour
    fallback_prefix: str = "fallback/"  # one object per event Firehose refused, by event hour
    curated_prefix: str = "usage/"  # the Glue table's location: Parquet, by UTC day
    manifest_prefix: str = "manifests/usage/"  # which source objects each generation holds
    # Lines that are not valid events, with their reason, source object and line number.
    quarantine_prefix: str = "quarantine/"

    def raw_hour_prefix(self, hour: datetime) -> str:
        """The prefix of the Firehose objects that arrived in `hour` (UTC)."""
        return self.raw_prefix + hour_path(hour)

    def fallback_hour_prefix(self, hour: datetime) -> str:
        """The prefix of the fallback objects of events stamped in `hour` (UTC)."""
        return self.fallback_prefix + hour_path(hour)

    def fallback_key(self, event_id: str, timestamp: datetime) -> str:
        """Where an event lands when Firehose will not take it: under the hour of its
        timestamp, so the partition job finds it the same way as Firehose's objects."""
        return f"{self.fallback_prefix}{hour_path(timestamp)}{event_id}.json"

    def partition_prefix(self, day: date) -> str:
        """The Hive-style folder of a UTC day (`usage/year=/month=/day=/`): where the partition
        lived before generations, and what an older partition's location may still be."""
        return self.curated_prefix + partition_path(day)

    def generation_prefix(self, day: date, name: str) -> str:
        """The folder of one generation of a day's partition. Generations are siblings, never
        inside a folder a partition points to, so no reader of one sees another's files."""
        return f"{self.curated_prefix}gen/{partition_path(day)}{name}/"

    def curated_file_key(self, generation_prefix: str, bucket: int) -> str:
        """The Parquet file of one event-id bucket in a generation."""
        return f"{generation_prefix}part-{bucket:04d}.snappy.parquet"

    def bucket_of_file(self, key: str) -> int | None:
        """The event-id bucket a curated file holds (from its name), or None."""
        match = _BUCKET_FILE.search(key)
        return int(match.group(1)) if match else None

    def source_manifest_key(self, day: date, name: str) -> str:
        """The list of source objects a generation of a day was built from (gzip JSON)."""
        return f"{self.manifest_prefix}{day.isoformat()}/{name}.json.gz"

    def quarantine_key(self, source_key: str) -> str:
        """Where the bad lines of a source object are set aside (JSON lines, one per line)."""
        return f"{self.quarantine_prefix}{source_key}.jsonl"

    def source_of_quarantine_key(self, key: str) -> str | None:
        """The source object key a quarantine object is about, or None."""
        if not key.startswith(self.quarantine_prefix) or not key.endswith(".jsonl"):
            return None
        return key[len(self.quarantine_prefix) : -len(".jsonl")]

    def partition_of(self, key: str) -> tuple[str, str, str] | None:
        """(`year`, `month`, `day`) of a curated object key; None outside a partition folder."""
        if not key.startswith(self.curated_prefix):
            return None
        return partition_of_path(key[len(self.curated_prefix) :])

    def curated_url(self, bucket: str) -> str:
        """The Glue table's location, `s3://<bucket>/<curated prefix>`."""
        return s3_url(bucket, self.curated_prefix)
