"""Curated usage under bad input and faults: poison lines, overlapping runs, a query during a
rebuild, a run killed halfway, an event days late (moto behind the local AWS endpoint)."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from werkzeug.serving import make_server

from chalicelib import wiring
from chalicelib.analytics import maintenance, quarantine
from chalicelib.analytics.engines import DuckDBEngine
from chalicelib.layout import BucketLayout
from chalicelib.settings import Settings
from local.aws_endpoint import make_app
from tests.support.lake import CURATION_TABLE, DATABASE, TABLE, Lake, create_catalog
from tests.support.usage_events import event, ndjson

BUCKET = "curation-faults"
DAY = date(2025, 12, 7)
NOON = datetime(2025, 12, 7, 12, tzinfo=UTC)
COUNT_SQL = "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM token_usage_logs"

POISON = {
    "not JSON": b"this is not json",
    "truncated JSON": b'{"event_id": "half"',
    "too deep": b'{"x": ' * 3000 + b"1" + b"}" * 3000,
    "out-of-range number": json.dumps({**event(), "input_tokens": 2**70}).encode(),
    "lone surrogate": json.dumps(event()).replace('"tenant-a"', '"\\ud800"', 1).encode(),
    "invalid UTF-8": json.dumps(event()).encode().replace(b"tenant-a", b"tenant-\xff", 1),
    "unknown status": json.dumps({**event(), "status": "maybe"}).encode(),
    "empty event_id": json.dumps({**event(), "event_id": ""}).encode(),
    "negative cost": json.dumps({**event(), "cost_usd": "-0.5"}).encode(),
    "unknown schema_version": json.dumps({**event(), "schema_version": 7}).encode(),
    "unparseable timestamp": json.dumps({**event(), "timestamp": "the 7th at noon"}).encode(),
    "timestamp without zone": json.dumps({**event(), "timestamp": "2025-12-07T12:00:00"}).encode(),
    "two objects on a line": ndjson([event(), event()]).replace(b"\n", b"", 1).rstrip(b"\n"),
    "not an object": b"[1, 2, 3]",
    "null": b"null",  # pyarrow's JSON reader crashes the process on an object starting so
}
REASONS = {
    "not JSON": "not JSON",
    "truncated JSON": "not JSON",
    "too deep": "nested too deeply",
    "out-of-range number": "out of range",
    "lone surrogate": "lone surrogate",
    "invalid UTF-8": "not UTF-8",
    "unknown status": "unknown status",
    "empty event_id": "event_id is empty",
    "negative cost": "cost_usd is negative",
    "unknown schema_version": "unknown schema_version",
    "unparseable timestamp": "timestamp does not parse",
    "timestamp without zone": "no time zone",
    "two objects on a line": "not JSON",
    "not an object": "not a JSON object",
    "null": "not a JSON object",
}


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto behind the local AWS endpoint's app (DynamoDB writes atomic, as on AWS)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = make_server("127.0.0.1", 0, make_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield url
    finally:
        with urllib.request.urlopen(
            urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10
        ):
            pass
        server.shutdown()
        thread.join(timeout=5)


def client(endpoint: str, service: str) -> Any:
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=endpoint,
        config=Config(max_pool_connections=64, retries={"mode": "standard"}),
    )


@pytest.fixture
def lake(endpoint: str) -> Lake:
    s3, glue, dynamodb = (client(endpoint, name) for name in ("s3", "glue", "dynamodb"))
    s3.create_bucket(Bucket=BUCKET)
    create_catalog(BUCKET, glue, dynamodb)
    return Lake(BUCKET, client=s3, glue_client=glue, dynamodb_client=dynamodb)


def engine(lake: Lake) -> DuckDBEngine:
    return DuckDBEngine(s3=lake.s3, catalog=lake.catalog, database=DATABASE, table=TABLE)


def ids(lake: Lake, day: date = DAY) -> list[str]:
    return sorted(row["event_id"] for row in lake.partition_rows(day))


# --------------------------------------------------------------------------- poison


@pytest.mark.parametrize("name", sorted(POISON))
def test_a_poison_line_alone_is_quarantined_with_its_reason_and_the_job_succeeds(
    lake: Lake, name: str
) -> None:
    key = f"raw/2025/12/07/12/poison-{name.replace(' ', '-')}"
    lake.s3.put_object(Bucket=BUCKET, Key=key, Body=POISON[name] + b"\n")
    result = lake.run(DAY)
    assert (result.status, result.events, result.quarantined) == ("empty", 0, 1)
    (line,) = quarantine.listing(lake.s3, BUCKET, BucketLayout())
    assert (line.source, line.line) == (key, 1)
    assert REASONS[name] in line.reason


@pytest.mark.parametrize("name", sorted(POISON))
def test_a_poison_line_among_good_events_costs_only_itself(lake: Lake, name: str) -> None:
    good = [event(at=NOON, event_id=f"good-{n}") for n in range(4)]
    body = ndjson(good[:2]) + POISON[name] + b"\n" + ndjson(good[2:])
    key = "raw/2025/12/07/12/mixed"
    lake.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    result = lake.run(DAY)
    assert (result.status, result.events, result.quarantined) == ("written", 4, 1)
    assert ids(lake) == [f"good-{n}" for n in range(4)]
    (line,) = quarantine.listing(lake.s3, BUCKET, BucketLayout(), under="raw/2025/12/07/")
    assert (line.source, line.line) == (key, 3)
    assert REASONS[name] in line.reason
    again = lake.run(DAY, force=True)  # a rebuild quarantines the same line, once
    assert (again.events, again.quarantined) == (4, 1)
    assert len(list(quarantine.listing(lake.s3, BUCKET, BucketLayout()))) == 1


def test_an_object_whose_first_line_is_null_is_curated_around_it(lake: Lake) -> None:
    lake.s3.put_object(
        Bucket=BUCKET, Key="raw/2025/12/07/12/n", Body=b"null\n" + ndjson([event(at=NOON)])
    )
    result = lake.run(DAY)
    assert (result.events, result.quarantined) == (1, 1)


# --------------------------------------------------------------------------- overlap


@pytest.mark.parametrize("runs", [3, 10])
def test_concurrent_runs_of_one_day_leave_exactly_one_row_per_event(lake: Lake, runs: int) -> None:
    events = [event(at=NOON + timedelta(seconds=n), event_id=f"e-{n:03d}") for n in range(60)]
    for start in range(0, 60, 20):
        lake.put_raw(NOON, events[start : start + 20])
    lake.put_raw(NOON + timedelta(hours=1), events[:10])  # Firehose redelivered some
    barrier = threading.Barrier(runs)

    def run(number: int) -> str:
        barrier.wait()
        # Schedules, retries and backfills: some incremental, some forced, all waiting.
        return lake.run(DAY, force=number % 3 == 0, wait_s=60).status

    with ThreadPoolExecutor(runs) as pool:
        statuses = list(pool.map(run, range(runs)))
    assert "written" in statuses
    assert set(statuses) <= {"written", "unchanged"}
    assert ids(lake) == [e["event_id"] for e in events]
    assert engine(lake).query(COUNT_SQL).rows == ((60, 60),)


def test_a_run_that_cannot_get_the_lease_reports_busy_and_changes_nothing(lake: Lake) -> None:
    lake.put_raw(NOON, [event(at=NOON)])
    state = lake.state
    from chalicelib.analytics.state import Retired

    assert (
        state.acquire(DAY, "someone", now=0.0, until=9e12, pending=Retired("x/", "", 0)) is not None
    )
    result = lake.run(DAY)
    assert (result.status, lake.location(DAY)) == ("busy", None)
    state.release(DAY, "someone", ())
    assert lake.run(DAY).status == "written"


# --------------------------------------------------------------------------- readers


def test_a_query_during_rebuilds_sees_the_old_or_the_new_count_never_another(lake: Lake) -> None:
    lake.put_raw(NOON, [event(at=NOON + timedelta(seconds=n)) for n in range(300)])
    lake.run(DAY)
    reader = engine(lake)
    committed = [300]
    seen: set[int] = set()
    done = threading.Event()

    def rebuild() -> None:
        try:
            for round_number in range(4):
                more = [
                    event(at=NOON + timedelta(minutes=round_number, seconds=n)) for n in range(50)
                ]
                lake.put_raw(NOON + timedelta(hours=1), more)
                result = lake.run(DAY, force=round_number % 2 == 1)
                committed.append(result.events)
        finally:
            done.set()

    worker = threading.Thread(target=rebuild)
    worker.start()
    while not done.is_set():
        ((count, distinct),) = reader.query(COUNT_SQL).rows
        assert count == distinct
        seen.add(count)
    worker.join()
    assert committed == [300, 350, 400, 450, 500]
    assert seen <= set(committed)
    assert reader.query(COUNT_SQL).rows == ((500, 500),)


# --------------------------------------------------------------------------- crashes


class FailingS3:
    """An S3 client that fails on the n-th Parquet file put (a run killed halfway)."""

    def __init__(self, s3: Any, fail_at: int) -> None:
        self._s3 = s3
        self._left = fail_at

    def put_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"].endswith(".parquet"):
            self._left -= 1
            if self._left == 0:
                raise RuntimeError("killed halfway")
        return self._s3.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def test_a_run_killed_halfway_leaves_the_previous_state_and_the_next_run_completes_it(
    lake: Lake,
) -> None:
    assert lake.config is not None
    small = replace(lake.config, rows_per_bucket=50)  # several bucket files per generation
    lake.config = small
    lake.put_raw(NOON, [event(at=NOON + timedelta(seconds=n)) for n in range(200)])
    first = lake.run(DAY)
    assert first.files > 2
    before_location, before_rows = lake.location(DAY), ids(lake)
    lake.put_raw(NOON + timedelta(hours=1), [event(at=NOON) for _ in range(100)])

    broken = Lake(
        BUCKET,
        client=FailingS3(lake.s3, fail_at=2),
        glue_client=lake.glue_client,
        dynamodb_client=lake.dynamodb_client,
        config=small,
    )
    with pytest.raises(RuntimeError, match="killed halfway"):
        broken.run(DAY)
    assert (lake.location(DAY), ids(lake)) == (before_location, before_rows)
    assert engine(lake).query(COUNT_SQL).rows == ((200, 200),)
    state = lake.state.read(DAY)
    assert state.lease_holder is None  # released: the next run need not wait
    assert any(item.location.startswith("usage/gen/") for item in state.retired)

    after = lake.run(DAY)
    assert (after.status, after.events, after.added) == ("written", 300, 100)
    assert engine(lake).query(COUNT_SQL).rows == ((300, 300),)


def test_retired_generations_are_deleted_once_their_grace_period_is_over(lake: Lake) -> None:
    assert lake.config is not None
    lake.config = replace(lake.config, retention_s=0)
    locations = []
    for _ in range(3):
        lake.put_raw(NOON, [event(at=NOON)])
        lake.run(DAY)
        locations.append(lake.location(DAY))
    listing = lake.s3.list_objects_v2(Bucket=BUCKET, Prefix="usage/")
    folders = {item["Key"].rsplit("/", 1)[0] + "/" for item in listing.get("Contents", [])}
    # The first is gone; the one Glue pointed at while the last run committed goes next run.
    assert folders == {locations[1], locations[2]}
    assert len(ids(lake)) == 3


# --------------------------------------------------------------------------- late events


def test_an_event_three_days_late_is_curated_into_its_own_day_by_the_sweep(
    lake: Lake, endpoint: str
) -> None:
    lake.put_raw(NOON, [event(at=NOON, event_id="on-time")])
    lake.run(DAY)
    # Three days later: Firehose finally delivers an object of the day's 23:00 hour, and an
    # operator re-drives a corrected event into the fallback location under its own hour.
    late_hour = datetime(2025, 12, 7, 23, tzinfo=UTC)
    lake.put_raw(late_hour, [event(at="2025-12-07T23:05:00.000Z", event_id="late-raw")])
    lake.put_fallback(event(at="2025-12-07T08:00:00.000Z", event_id="late-fallback"))
    settings = Settings.from_env(
        {
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "ANALYTICS_BUCKET": BUCKET,
            "CURATION_TABLE": CURATION_TABLE,
        }
    )
    wiring.reset()
    try:
        three_days_later = datetime(2025, 12, 10, 3, 20, tzinfo=UTC)
        summary = wiring.run_partition_maintenance(
            settings, three_days_later, maintenance.sweep_days(settings)
        )
    finally:
        wiring.reset()
    by_day = {p["day"]: p for p in summary["partitions"]}
    assert (by_day["2025-12-07"]["status"], by_day["2025-12-07"]["added"]) == ("written", 2)
    assert ids(lake) == ["late-fallback", "late-raw", "on-time"]


def test_a_growing_day_splits_its_buckets_and_keeps_one_copy_of_each_event(lake: Lake) -> None:
    assert lake.config is not None
    lake.config = replace(lake.config, rows_per_bucket=50)
    first = [event(at=NOON + timedelta(seconds=n), event_id=f"a-{n:03d}") for n in range(40)]
    lake.put_raw(NOON, first)
    before = lake.run(DAY).files
    second = [
        event(at=NOON + timedelta(minutes=5, seconds=n), event_id=f"b-{n:03d}") for n in range(300)
    ]
    lake.put_raw(NOON + timedelta(hours=1), second + first[:10])  # some redelivered
    grown = lake.run(DAY)
    assert (grown.mode, grown.events, grown.added, grown.duplicates) == (
        "incremental",
        340,
        300,
        10,
    )
    assert grown.files > before
    assert ids(lake) == sorted(e["event_id"] for e in first + second)
    assert engine(lake).query(COUNT_SQL).rows == ((340, 340),)
