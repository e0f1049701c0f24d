"""The local endpoint reaches boto3 through Settings and wiring, not os.environ."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib import wiring
from chalicelib.settings import Settings
from tests.support.lake import CURATION_TABLE, DATABASE, TABLE, Lake, create_catalog
from tests.support.usage_events import event

BUCKET = "local-endpoint-test"
NOON = datetime(2025, 12, 7, 12, tzinfo=UTC)


def test_partition_maintenance_reaches_the_local_endpoint_through_the_wiring(
    local_endpoint: str,
) -> None:
    # What meterctl and the benchmarks do: no AWS_* variable; the endpoint and dummy
    # credentials reach wiring's clients through Settings alone.
    settings = Settings.from_env(
        {
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": local_endpoint,
            "ANALYTICS_BUCKET": BUCKET,
            "CURATION_TABLE": CURATION_TABLE,
        }
    )
    s3 = wiring.client("s3", settings)
    glue = wiring.client("glue", settings)
    s3.create_bucket(Bucket=BUCKET)
    create_catalog(BUCKET, glue, wiring.client("dynamodb", settings))
    Lake(BUCKET, client=s3, glue_client=glue).put_raw(
        NOON, [event("tenant-a", NOON), event("tenant-b", NOON)]
    )

    summary = wiring.run_partition_maintenance(settings, datetime(2025, 12, 8, tzinfo=UTC), [1])

    assert [(p["day"], p["status"], p["events"]) for p in summary["partitions"]] == [
        ("2025-12-07", "written", 2)
    ]
    partitions = glue.get_partitions(DatabaseName=DATABASE, TableName=TABLE)["Partitions"]
    assert [p["Values"] for p in partitions] == [["2025", "12", "07"]]  # switched by the job
    assert Lake(BUCKET, client=s3, glue_client=glue).partition_keys(NOON.date())
