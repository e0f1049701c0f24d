"""The local endpoint reaches boto3 and awswrangler through Settings and wiring, not os.environ."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib import wiring
from chalicelib.settings import Settings
from tests.support.lake import DATABASE, TABLE, Lake, create_catalog
from tests.support.usage_events import event

BUCKET = "local-endpoint-test"
NOON = datetime(2025, 12, 7, 12, tzinfo=UTC)


def test_partition_maintenance_reaches_the_local_endpoint_through_the_wiring(
    local_endpoint: str,
) -> None:
    # What meterctl and the benchmarks do: no AWS_* variable; the endpoint and dummy
    # credentials reach wiring's clients and awswrangler's session through Settings alone.
    settings = Settings.from_env(
        {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": local_endpoint, "ANALYTICS_BUCKET": BUCKET}
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
