"""The analytics bucket's key layout: raw and fallback hours, manifests, curated partitions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

# Firehose's default object prefix, without prefix expressions so that moto and AWS agree:
# the UTC hour a record arrived. Fallback objects copy it with the event's own hour.
HOUR_FORMAT = "%Y/%m/%d/%H"
_HOUR_PATH_LENGTH = len("YYYY/MM/DD/HH/")
# Hive-style partition directories, which Glue and Athena read as year/month/day strings.
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


@dataclass(frozen=True)
class BucketLayout:
    """Where each kind of object lives in the analytics bucket (every prefix ends with "/").

    The raw, fallback and curated prefixes are the stage's settings (RAW_PREFIX,
    FALLBACK_PREFIX, CURATED_PREFIX); the defaults are the documented ones.
    """

    raw_prefix: str = "raw/"  # Firehose's objects: newline-delimited events, by arrival hour
    fallback_prefix: str = "fallback/"  # one object per event Firehose refused, by event hour
    curated_prefix: str = "usage/"  # the Glue table's location: Parquet, by UTC day
    manifest_prefix: str = "manifests/usage/"  # what each day's partition was built from
    # Reserved for lines that are not valid events, set aside with their reason; nothing
    # writes here yet, and the stage policies grant no access to it.
    quarantine_prefix: str = "quarantine/"

    def raw_hour_prefix(self, hour: datetime) -> str:
        """The prefix of the Firehose objects that arrived in `hour` (UTC)."""
        return self.raw_prefix + hour_path(hour)

    def fallback_key(self, event_id: str, timestamp: datetime) -> str:
        """Where an event lands when Firehose will not take it: under the hour of its
        timestamp, so the partition job finds it the same way as Firehose's objects."""
        return f"{self.fallback_prefix}{hour_path(timestamp)}{event_id}.json"

    def manifest_key(self, day: date) -> str:
        """The manifest of a UTC day's partition (`manifests/usage/YYYY-MM-DD.json`)."""
        return f"{self.manifest_prefix}{day.isoformat()}.json"

    def partition_prefix(self, day: date) -> str:
        """The prefix of every curated object of a UTC day."""
        return self.curated_prefix + partition_path(day)

    def partition_of(self, key: str) -> tuple[str, str, str] | None:
        """(`year`, `month`, `day`) of a curated object key; None outside a partition folder
        (Athena would not read such an object either)."""
        if not key.startswith(self.curated_prefix):
            return None
        return partition_of_path(key[len(self.curated_prefix) :])

    def curated_url(self, bucket: str) -> str:
        """The Glue table's location, `s3://<bucket>/<curated prefix>`."""
        return f"s3://{bucket}/{self.curated_prefix}"
