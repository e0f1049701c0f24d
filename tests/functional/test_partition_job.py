"""Partition maintenance on moto: Parquet + Glue partitions, idempotence, dedupe, late events."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import boto3
import pytest
from chalice.test import Client

from chalicelib import wiring
from chalicelib.analytics import maintenance
from chalicelib.analytics.partitions import PartitionJobError
from chalicelib.settings import Settings
from tests.functional.conftest import BUCKET, make_settings
from tests.support.lake import REGION, Lake, create_catalog
from tests.support.usage_events import event

DAY = date(2025, 12, 7)
NOON = datetime(2025, 12, 7, 12, tzinfo=UTC)


@pytest.fixture
def lake(aws: None) -> Lake:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    create_catalog(BUCKET)
    return Lake(BUCKET)


def test_job_writes_the_days_parquet_and_registers_its_glue_partition(lake: Lake) -> None:
    lake.put_raw(NOON, [event("tenant-a", NOON), event("tenant-b", NOON)])
    result = lake.run(DAY)
    assert (result.status, result.events, result.duplicates) == ("written", 2, 0)
    assert lake.glue_partitions() == [["2025", "12", "07"]]
    rows = lake.partition_rows(DAY)
    assert sorted(r["tenant_id"] for r in rows) == ["tenant-a", "tenant-b"]
    assert all(k.endswith(".snappy.parquet") for k in lake.partition_keys(DAY))


def test_rerunning_with_the_same_inputs_changes_nothing(lake: Lake) -> None:
    lake.put_raw(NOON, [event(at=NOON) for _ in range(3)])
    lake.run(DAY)
    before = lake.partition_keys(DAY)
    again = lake.run(DAY)
    assert again.status == "unchanged"
    assert again.events == 3
    assert lake.partition_keys(DAY) == before


def test_a_forced_rerun_rewrites_the_same_rows(lake: Lake) -> None:
    lake.put_raw(NOON, [event(at=NOON + timedelta(seconds=i)) for i in range(5)])
    lake.run(DAY)
    first = lake.partition_rows(DAY)
    assert lake.run(DAY, force=True).status == "written"
    assert lake.partition_rows(DAY) == first
    assert lake.glue_partitions() == [["2025", "12", "07"]]


def test_the_same_event_id_twice_in_raw_data_counts_once(lake: Lake) -> None:
    duplicate = event("tenant-a", NOON, event_id="evt-1")
    lake.put_raw(NOON, [duplicate, event("tenant-a", NOON)])
    lake.put_raw(NOON + timedelta(hours=1), [duplicate])  # Firehose redelivered it
    lake.put_fallback(duplicate)  # and the recorder also wrote it to the fallback
    result = lake.run(DAY)
    assert (result.events, result.duplicates) == (2, 2)
    assert [r["event_id"] for r in lake.partition_rows(DAY)].count("evt-1") == 1


def test_events_only_in_the_fallback_location_count(lake: Lake) -> None:
    lake.put_raw(NOON, [event("tenant-a", NOON)])
    lake.put_fallback(event("tenant-a", NOON, event_id="fb-1", status="error"))
    lake.run(DAY)
    rows = {r["event_id"]: r for r in lake.partition_rows(DAY)}
    assert len(rows) == 2
    assert rows["fb-1"]["status"] == "error"


def test_an_event_from_before_midnight_delivered_after_it_counts_for_its_own_day(
    lake: Lake,
) -> None:
    last_second = datetime(2025, 12, 7, 23, 59, 59, 900_000, tzinfo=UTC)
    next_day = datetime(2025, 12, 8, 0, tzinfo=UTC)
    lake.put_raw(next_day, [event(at=last_second, event_id="late"), event(at=next_day)])
    result = lake.run(DAY)
    assert [r["event_id"] for r in lake.partition_rows(DAY)] == ["late"]
    assert result.other_days == 1  # the 2025-12-08 event, left for its own day
    assert lake.run(date(2025, 12, 8)).events == 1


def test_an_object_delivered_after_the_days_run_is_picked_up_by_the_sweep(lake: Lake) -> None:
    lake.put_raw(NOON, [event(at=NOON)])
    lake.run(DAY)
    # Firehose retried a failed S3 delivery: an object for 23:00 lands two days later.
    lake.put_raw(datetime(2025, 12, 7, 23, tzinfo=UTC), [event(at="2025-12-07T23:10:00Z")])
    settings = make_settings(ANALYTICS_BUCKET=BUCKET)
    wiring.reset()
    wiring.override(settings=settings)
    try:
        two_days_later = datetime(2025, 12, 9, 3, 20, tzinfo=UTC)
        summary = wiring.run_partition_maintenance(
            settings, two_days_later, maintenance.sweep_days(settings)
        )
    finally:
        wiring.reset()
    statuses = {p["day"]: p["status"] for p in summary["partitions"]}
    assert statuses["2025-12-07"] == "written"
    assert len(lake.partition_rows(DAY)) == 2


def test_an_event_outside_every_window_is_refiled_for_its_own_day(
    lake: Lake, caplog: pytest.LogCaptureFixture
) -> None:
    # Stamped on the 5th but delivered on the 7th: outside the 5th's 2-hour lateness window.
    lake.put_raw(NOON, [event(at=NOON), event(at="2025-12-05T08:00:00Z", event_id="stray")])
    with caplog.at_level(logging.ERROR, logger="chalicelib"):
        result = lake.run(DAY)
    assert result.orphaned == {"2025-12-05": 1}
    assert any("outside their day's window" in r.getMessage() for r in caplog.records)
    assert "stray" not in [r["event_id"] for r in lake.partition_rows(DAY)]
    # Re-filed where the recorder would have put it, so the 5th's own run finds it.
    assert lake.s3.list_objects_v2(Bucket=BUCKET, Prefix="fallback/2025/12/05/08/")["KeyCount"]
    assert lake.run(date(2025, 12, 5)).events == 1
    assert [r["event_id"] for r in lake.partition_rows(date(2025, 12, 5))] == ["stray"]


def test_lines_that_are_not_events_are_left_out_and_counted(lake: Lake) -> None:
    key = lake.put_raw(NOON, [event(at=NOON)])
    body = lake.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    lake.s3.put_object(Bucket=BUCKET, Key=key, Body=body + b'{"event_id": "half"\n')
    result = lake.run(DAY)
    assert (result.events, result.quarantined) == (1, 1)


def test_cost_reaches_parquet_as_exact_decimal(lake: Lake) -> None:
    costs = ["0.000000000001", "0.1", "0.2", "1234.567890123456"]
    lake.put_raw(NOON, [event(at=NOON, cost_usd=c) for c in costs])
    lake.run(DAY)
    values = [r["cost_usd"] for r in lake.partition_rows(DAY)]
    assert all(isinstance(v, Decimal) for v in values)
    assert sum(values) == Decimal("1234.867890123457")


def test_a_rebuild_with_fewer_events_than_before_is_refused(lake: Lake) -> None:
    key = lake.put_raw(NOON, [event(at=NOON), event(at=NOON)])
    lake.run(DAY)
    lake.s3.delete_object(Bucket=BUCKET, Key=key)
    lake.put_raw(NOON, [event(at=NOON)])
    # An incremental run adds the new object and keeps what was curated from the deleted one.
    kept = lake.run(DAY)
    assert (kept.events, kept.missing_objects) == (3, 1)
    before = lake.partition_keys(DAY)
    with pytest.raises(PartitionJobError, match="raw objects may have been deleted"):
        lake.run(DAY, force=True)
    assert lake.partition_keys(DAY) == before
    assert lake.run(DAY, force=True, allow_shrink=True).events == 1


def test_a_day_in_the_future_is_refused(lake: Lake) -> None:
    with pytest.raises(PartitionJobError, match="in the future"):
        lake.run(DAY, now=datetime(2025, 12, 6, 23, tzinfo=UTC))


def test_the_schedules_run_through_chalice_with_the_events_clock(
    client: Client, app_env: Settings
) -> None:
    create_catalog(BUCKET)
    lake = Lake(BUCKET)
    lake.put_raw(NOON, [event(at=NOON)])
    lake.put_raw(NOON - timedelta(days=1), [event(at=NOON - timedelta(days=1))])
    cw_event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )
    cw_event["time"] = "2025-12-07T13:10:00Z"
    today = client.lambda_.invoke("maintain_usage_today", cw_event).payload
    assert [(p["day"], p["status"], p["events"]) for p in today["partitions"]] == [
        ("2025-12-07", "written", 1)
    ]
    cw_event["time"] = "2025-12-07T03:10:00Z"
    yesterday = client.lambda_.invoke("maintain_usage_yesterday", cw_event).payload
    assert [(p["day"], p["events"]) for p in yesterday["partitions"]] == [("2025-12-06", 1)]
    cw_event["time"] = "2025-12-09T03:20:00Z"
    sweep = client.lambda_.invoke("sweep_late_usage", cw_event).payload
    assert {p["day"]: p["status"] for p in sweep["partitions"]}["2025-12-07"] == "unchanged"
