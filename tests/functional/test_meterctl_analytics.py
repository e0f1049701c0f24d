"""meterctl sql and backfill on a local endpoint: Settings from the outputs, clients from wiring."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib import wiring
from chalicelib.settings import Settings
from meterctl.cli import main
from tests.support.lake import CURATION_TABLE, Lake, create_catalog
from tests.support.usage_events import event

BUCKET = "meterctl-analytics-test"
DAY = datetime(2025, 12, 7, 12, tzinfo=UTC)


@pytest.fixture
def outputs(local_endpoint: str, tmp_path: Path) -> Path:
    """A local stack's outputs file over a bucket with two tenants' raw events of DAY."""
    settings = Settings.from_env({"AWS_ENDPOINT_URL": local_endpoint})
    s3 = wiring.client("s3", settings)
    s3.create_bucket(Bucket=BUCKET)
    create_catalog(BUCKET, wiring.client("glue", settings), wiring.client("dynamodb", settings))
    Lake(BUCKET, client=s3).put_raw(
        DAY, [event("tenant-a", DAY), event("tenant-a", DAY), event("tenant-b", DAY)]
    )
    path = tmp_path / "outputs.json"
    path.write_text(
        json.dumps(
            {
                "AnalyticsBucketName": BUCKET,
                "GlueDatabaseName": "bedrock_metering_db",
                "GlueTableName": "token_usage_logs",
                "CurationTableName": CURATION_TABLE,
                "AwsEndpointUrl": local_endpoint,
                "Region": "us-east-1",
            }
        )
    )
    wiring.reset()  # meterctl builds its own, from the outputs
    return path


def test_backfill_rebuilds_the_days_through_the_scheduled_job_with_progress(
    outputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["--outputs", str(outputs), "backfill", "--from", "2025-12-06", "--to", "2025-12-07"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "day 1/2: 2025-12-06" in err
    assert "day 2/2: 2025-12-07" in err
    rows = [line.split("|") for line in out.splitlines()[2:-1]]
    assert [(r[0].strip(), r[1].strip(), r[4].strip()) for r in rows] == [
        ("2025-12-06", "empty", "0"),
        ("2025-12-07", "written", "3"),
    ]


def test_sql_runs_on_duckdb_over_the_local_curated_data(
    outputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--outputs", str(outputs), "backfill", "--from", "2025-12-07"]) == 0
    capsys.readouterr()
    sql = (
        "SELECT tenant_id, COUNT(*) AS requests FROM bedrock_metering_db.token_usage_logs "
        "GROUP BY tenant_id ORDER BY tenant_id"
    )
    assert main(["--outputs", str(outputs), "sql", "--format", "json", sql]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [
        {"tenant_id": "tenant-a", "requests": 2},
        {"tenant_id": "tenant-b", "requests": 1},
    ]


def test_a_failing_day_stops_the_backfill_with_its_reason(
    outputs: Path, local_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--outputs", str(outputs), "backfill", "--from", "2025-12-07"]) == 0
    # Raw data deleted: the day would now hold fewer events than its last build.
    s3 = wiring.client("s3", Settings.from_env({"AWS_ENDPOINT_URL": local_endpoint}))
    for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="raw/")["Contents"]:
        s3.delete_object(Bucket=BUCKET, Key=item["Key"])
    Lake(BUCKET, client=s3).put_raw(DAY, [event("tenant-a", DAY)])
    capsys.readouterr()

    code = main(
        [
            "--outputs",
            str(outputs),
            "backfill",
            "--from",
            "2025-12-07",
            "--to",
            "2025-12-08",
            "--force",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "raw objects may have been deleted" in err
    assert "day 2/2" not in err  # stopped at the failing day


def test_quarantine_list_shows_each_bad_line_and_redrive_curates_the_fixed_one(
    outputs: Path, local_endpoint: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    s3 = wiring.client("s3", Settings.from_env({"AWS_ENDPOINT_URL": local_endpoint}))
    broken = {**event("tenant-c", DAY, event_id="fix-me"), "status": "done"}
    key = "raw/2025/12/07/12/with-a-bad-line"
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(broken).encode() + b"\n")
    assert main(["--outputs", str(outputs), "backfill", "--from", "2025-12-07"]) == 0
    assert "1 line(s) quarantined" in capsys.readouterr().err

    assert main(["--outputs", str(outputs), "quarantine", "list", "--from", "2025-12-07"]) == 0
    out = capsys.readouterr().out
    assert key in out
    assert "unknown status 'done'" in out
    assert main(["--outputs", str(outputs), "quarantine", "list", "--format", "json"]) == 0
    (listed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (listed["source"], listed["line"]) == (key, 1)

    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text(json.dumps({**broken, "status": "ok"}) + "\n")
    assert main(["--outputs", str(outputs), "quarantine", "redrive", str(fixed)]) == 0
    assert "fallback/2025/12/07/12/fix-me.json" in capsys.readouterr().out
    assert main(["--outputs", str(outputs), "backfill", "--from", "2025-12-07"]) == 0
    capsys.readouterr()
    sql = "SELECT status FROM token_usage_logs WHERE event_id = 'fix-me'"
    assert main(["--outputs", str(outputs), "sql", "--format", "json", sql]) == 0
    assert json.loads(capsys.readouterr().out) == {"status": "ok"}


def test_redrive_refuses_a_line_that_is_still_broken(
    outputs: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    still = tmp_path / "still.jsonl"
    still.write_text(json.dumps({**event(), "cost_usd": "-1"}) + "\n")
    assert main(["--outputs", str(outputs), "quarantine", "redrive", str(still)]) == 2
    assert "still not a valid event: cost_usd is negative" in capsys.readouterr().err
