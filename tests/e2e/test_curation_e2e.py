"""Overlapping curation runs on the local stack: concurrent `meterctl backfill` processes and
the stack's own job loop, one row per event at the end."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from local.running import RunningStack
from local.stack import ROOT
from tests.support.usage_events import event, ndjson

pytestmark = pytest.mark.e2e


def put_raw(stack: RunningStack, events: list[dict[str, object]]) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    key = f"raw/{hour:%Y/%m/%d/%H}/bedrock-metering-local-usage-events-1-{uuid.uuid4()}"
    stack.client("s3").put_object(
        Bucket=stack.outputs["AnalyticsBucketName"], Key=key, Body=ndjson(events)
    )


def backfills(stack: RunningStack, runs: int) -> list[subprocess.CompletedProcess[str]]:
    """`runs` backfills of today started together (every third forced), waited for."""
    today = datetime.now(UTC).date().isoformat()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "meterctl",
                "--outputs",
                str(stack.outputs_file),
                "backfill",
                "--from",
                today,
                *(["--force"] if number % 3 == 0 else []),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number in range(runs)
    ]
    done = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


def counts(stack: RunningStack, tenant: str) -> tuple[int, int]:
    # The tenant is this test's own generated id (letters, digits, dashes).
    select = "SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM token_usage_logs"
    sql = f"{select} WHERE tenant_id = '{tenant}'"
    row = json.loads(stack.meterctl("sql", "--format", "json", sql).stdout)
    return int(row["n"]), int(row["d"])


@pytest.mark.parametrize("runs", [3, 10])
def test_concurrent_runs_of_one_day_on_the_local_stack_leave_one_row_per_event(
    local_stack: RunningStack, runs: int
) -> None:
    tenant = f"overlap-{runs}-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    events = [event(tenant, start + timedelta(milliseconds=n)) for n in range(120)]
    put_raw(local_stack, events[:60])
    put_raw(local_stack, events[60:])
    put_raw(local_stack, events[:40])  # Firehose redelivered a batch

    results = backfills(local_stack, runs)

    for result in results:
        assert result.returncode == 0, result.stderr
    assert counts(local_stack, tenant) == (120, 120)
    # More arrive, and the same number of runs overlap again (with the stack's job loop).
    more = [event(tenant, start + timedelta(seconds=1, milliseconds=n)) for n in range(30)]
    put_raw(local_stack, more + events[:5])
    assert all(r.returncode == 0 for r in backfills(local_stack, runs))
    assert counts(local_stack, tenant) == (150, 150)
