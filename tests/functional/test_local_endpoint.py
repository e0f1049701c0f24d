"""The local endpoint reaches boto3 and awswrangler through the composer, not the environment.

meterctl and the benchmarks run against the local stack without an AWS_* variable set: the
endpoint and dummy credentials travel in Settings, to the clients and the boto3 session that
chalicelib.wiring builds (awswrangler's Glue and S3 clients included).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib import wiring
from chalicelib.settings import Settings
from local.running import moto_server
from tests.support.lake import DATABASE, TABLE, Lake, create_catalog
from tests.support.usage_events import event

BUCKET = "local-endpoint-test"
NOON = datetime(2025, 12, 7, 12, tzinfo=UTC)


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A moto server, and an environment without AWS endpoint, credentials or profile."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no credentials from anywhere else
    wiring.reset()
    with moto_server() as url:
        yield url
    wiring.reset()


def test_partition_maintenance_reaches_the_local_endpoint_through_the_wiring(
    endpoint: str,
) -> None:
    settings = Settings.from_env(
        {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint, "ANALYTICS_BUCKET": BUCKET}
    )
    s3 = wiring.client("s3", settings)
    glue = wiring.client("glue", settings)
    s3.create_bucket(Bucket=BUCKET)
    create_catalog(BUCKET, glue)
    Lake(BUCKET, client=s3).put_raw(NOON, [event("tenant-a", NOON), event("tenant-b", NOON)])

    summary = wiring.run_partition_maintenance(settings, datetime(2025, 12, 8, tzinfo=UTC), [1])

    assert [(p["day"], p["status"], p["events"]) for p in summary["partitions"]] == [
        ("2025-12-07", "written", 2)
    ]
    partitions = glue.get_partitions(DatabaseName=DATABASE, TableName=TABLE)["Partitions"]
    assert [p["Values"] for p in partitions] == [["2025", "12", "07"]]  # registered by awswrangler
    assert Lake(BUCKET, client=s3).partition_keys(NOON.date())
