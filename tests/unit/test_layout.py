"""The analytics bucket's key layout: Firehose hours, fallback keys, manifests, partitions."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from chalicelib.layout import BucketLayout, hour_of_key, partition_path

LAYOUT = BucketLayout()
HOUR = datetime(2025, 12, 7, 13, 59, 1, 413_000, tzinfo=UTC)
DAY = date(2025, 12, 7)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (
            "raw/2025/12/07/13/usage-1-2025-12-07-13-59-01-abc",
            datetime(2025, 12, 7, 13, tzinfo=UTC),
        ),
        ("fallback/2025/12/07/00/0f8e.json", None),  # wrong prefix for raw
        ("raw/2025/12/07/13", None),
        ("raw/2025/13/07/13/x", None),
        ("raw/notes.txt", None),
    ],
)
def test_hour_of_key_reads_firehose_layout_only(key: str, expected: datetime | None) -> None:
    assert hour_of_key(key, "raw/") == expected


def test_documented_keys_and_prefixes() -> None:
    assert LAYOUT.raw_hour_prefix(HOUR) == "raw/2025/12/07/13/"
    assert LAYOUT.fallback_key("ev-1", HOUR) == "fallback/2025/12/07/13/ev-1.json"
    assert LAYOUT.partition_prefix(DAY) == "usage/year=2025/month=12/day=07/"
    folder = LAYOUT.generation_prefix(DAY, "r1")
    assert folder == "usage/gen/year=2025/month=12/day=07/r1/"
    assert LAYOUT.curated_file_key(folder, 3) == folder + "part-0003.snappy.parquet"
    assert LAYOUT.bucket_of_file(folder + "part-0003.snappy.parquet") == 3
    assert LAYOUT.source_manifest_key(DAY, "r1") == "manifests/usage/2025-12-07/r1.json.gz"
    assert LAYOUT.quarantine_key("raw/2025/12/07/13/x") == "quarantine/raw/2025/12/07/13/x.jsonl"
    assert LAYOUT.source_of_quarantine_key("quarantine/raw/2025/x.jsonl") == "raw/2025/x"
    assert LAYOUT.curated_url("bucket") == "s3://bucket/usage/"


def test_configured_prefixes_are_used() -> None:
    layout = BucketLayout(raw_prefix="r/", fallback_prefix="f/", curated_prefix="c/")
    assert layout.raw_hour_prefix(HOUR) == "r/2025/12/07/13/"
    assert layout.fallback_key("ev-1", HOUR) == "f/2025/12/07/13/ev-1.json"
    assert layout.partition_prefix(DAY) == "c/year=2025/month=12/day=07/"


def test_a_fallback_key_is_found_by_the_hour_it_is_filed_under() -> None:
    key = LAYOUT.fallback_key("ev-1", HOUR)
    assert hour_of_key(key, LAYOUT.fallback_prefix) == datetime(2025, 12, 7, 13, tzinfo=UTC)


def test_partition_values_are_read_back_from_curated_keys() -> None:
    key = LAYOUT.partition_prefix(DAY) + "abc.snappy.parquet"
    assert LAYOUT.partition_of(key) == ("2025", "12", "07")
    assert partition_path(DAY) == "year=2025/month=12/day=07/"


@pytest.mark.parametrize(
    "key",
    [
        "usage/abc.parquet",  # not in a partition folder
        "usage/year=2025/month=12/abc.parquet",
        "other/year=2025/month=12/day=07/abc.parquet",  # outside the table location
    ],
)
def test_keys_outside_a_partition_folder_have_no_partition(key: str) -> None:
    assert LAYOUT.partition_of(key) is None
