"""The budget repair's event lookup: curated row groups, uncurated raw, fallback, bad lines."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
import pytest

from chalicelib.analytics.lookup import CuratedEventFinder, EventRef
from chalicelib.layout import BucketLayout
from tests.functional.conftest import BUCKET
from tests.support.lake import REGION, Lake, create_catalog
from tests.support.usage_events import event, ndjson

DAY = date(2025, 12, 7)
NOON = datetime(2025, 12, 7, 12, tzinfo=UTC)


class CountingS3:
    """An S3 client that counts what it is asked for."""

    def __init__(self) -> None:
        self._s3 = boto3.client("s3", region_name=REGION)
        self.gets: list[str] = []

    def get_object(self, **kwargs: Any) -> Any:
        self.gets.append(kwargs["Key"])
        return self._s3.get_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


@pytest.fixture
def lake(aws: None) -> Lake:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    create_catalog(BUCKET)
    return Lake(BUCKET)


def ref(record: dict[str, Any]) -> EventRef:
    moment = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    return EventRef(record["event_id"], record["tenant_id"], moment)


def test_curated_events_are_found_by_row_group_and_only_uncurated_raw_is_read(
    lake: Lake,
) -> None:
    assert lake.config is not None
    curated = [
        event(f"tenant-{n % 20:02d}", NOON + timedelta(seconds=n), event_id=f"c-{n}")
        for n in range(3000)
    ]
    first = lake.put_raw(NOON, curated)
    lake.run(DAY)
    # Arrived after the last run: not curated yet.
    late = event("tenant-07", NOON + timedelta(minutes=30), event_id="late")
    second = lake.put_raw(NOON, [late])
    fallback = event("tenant-08", NOON, event_id="fb")
    lake.put_fallback(fallback)
    s3 = CountingS3()
    finder = CuratedEventFinder(bucket=BUCKET, layout=BucketLayout(), s3=s3, state=lake.state)
    wanted = [curated[5], curated[2999], late, fallback]
    lookup = finder.find([*(ref(r) for r in wanted), EventRef("gone", "tenant-09", NOON)])

    assert sorted(lookup.events) == sorted(r["event_id"] for r in wanted)
    assert lookup.events["c-5"]["cost_usd"] == curated[5]["cost_usd"]
    assert lookup.events["late"]["total_tokens"] == late["total_tokens"]
    assert first not in s3.gets  # curated: read through the Parquet file instead
    assert second in s3.gets
    assert lookup.malformed_lines == 0


def test_a_malformed_line_naming_a_wanted_event_is_skipped_and_counted(lake: Lake) -> None:
    good = event("tenant-a", NOON, event_id="wanted-good")
    lake.s3.put_object(
        Bucket=BUCKET,
        Key="raw/2025/12/07/12/broken",
        Body=b'{"event_id": "wanted-bad", "input_tokens": \n' + ndjson([good]),
    )
    finder = CuratedEventFinder(bucket=BUCKET, layout=BucketLayout(), s3=lake.s3, state=None)
    lookup = finder.find([ref(good), EventRef("wanted-bad", "tenant-a", NOON)])
    assert list(lookup.events) == ["wanted-good"]
    assert lookup.malformed_lines == 1


def test_an_event_in_an_object_of_the_hour_before_its_own_is_found(lake: Lake) -> None:
    # Firehose names an object after its oldest record: a buffer opened at 12:59 carries 13:00.
    early = event("tenant-a", "2025-12-07T13:00:00.100Z", event_id="early")
    lake.put_raw(datetime(2025, 12, 7, 12, tzinfo=UTC), [early])
    finder = CuratedEventFinder(bucket=BUCKET, layout=BucketLayout(), s3=lake.s3, state=None)
    assert list(finder.find([ref(early)]).events) == ["early"]
