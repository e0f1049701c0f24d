"""Benchmark: the budget repair's event lookup for 50 tenants' expired reservations over a raw
hour of more than 200 MB, against the previous lookup (raw hours read per tenant).

Run: `python -m bench.budget_repair` (part of `make bench`). One UTC hour of raw objects
(~5 MiB each, 200 tenants) is curated by the partition job; then more objects arrive in the
same hour (not curated yet) and a few events land in the fallback location. Each of 50
tenants has two expired reservations: one event curated, the other in the uncurated raw
objects, in the fallback location, or nowhere (a crashed request: released). Each lookup runs
in a child process (its peak RSS is its own) and reports its time and what it read; the
previous lookup is taken from git at PREVIOUS_REPAIR and called once per tenant, as the
previous repair job did.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.partition_maintenance import (
    ROOT,
    event_line,
    peak_rss_mb,
    previous_job,
    provision,
)

PREVIOUS_REPAIR = "a2f6657"
HOUR = datetime(2025, 12, 7, 14, tzinfo=UTC)
HOUR_EVENTS = int(os.environ.get("BENCH_REPAIR_HOUR_EVENTS", "460000"))
LATE_EVENTS = 20_000
TENANTS = 200
REPAIRED_TENANTS = 50
OBJECT_BYTES = 5 * 1024 * 1024


def _tenant(line: str) -> str:
    return line.split('"tenant_id":"', 1)[1].split('"', 1)[0]


def fill(environment: dict[str, str]) -> dict[str, Any]:
    """The hour's objects, curated; then late objects and fallback events; the wanted refs."""
    from chalicelib import wiring
    from chalicelib.settings import Settings

    settings = Settings.from_env(environment)
    s3 = wiring.client("s3", settings)
    bucket = settings.analytics_bucket
    rng = random.Random(7)
    wanted: dict[str, dict[str, str]] = {}  # tenant -> {"curated": line, "other": line}

    def put(lines: list[str], tag: str) -> int:
        size = 0
        chunk: list[str] = []
        for number, line in enumerate(lines):
            chunk.append(line)
            size += len(line) + 1
            if size >= OBJECT_BYTES or number == len(lines) - 1:
                key = f"raw/{HOUR:%Y/%m/%d/%H}/bench-{tag}-{uuid.uuid4()}"
                s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(chunk) + "\n").encode())
                chunk, size = [], 0
        return len(lines)

    def lines_for(count: int, offset_s: float) -> list[str]:
        return [
            event_line(
                rng,
                HOUR + timedelta(seconds=offset_s + n * 3600 / count),
                str(uuid.UUID(int=rng.getrandbits(128))),
            )
            for n in range(count)
        ]

    hour = lines_for(HOUR_EVENTS, 0)
    raw_mb = sum(len(line) + 1 for line in hour) / 1e6
    put(hour, "curated")
    for line in hour:
        tenant = _tenant(line)
        if int(tenant.split("-")[1]) < REPAIRED_TENANTS and tenant not in wanted:
            wanted[tenant] = {"curated": line}
    now = HOUR + timedelta(days=1)
    wiring.run_partition_maintenance(settings, now, [1], force=True)
    late = lines_for(LATE_EVENTS, 1)
    put(late, "late")
    late_by_tenant = {_tenant(line): line for line in late}
    for number, (tenant, lines) in enumerate(sorted(wanted.items())):
        if number % 4 == 0:  # a crashed request: no event anywhere
            lines["other"] = event_line(rng, HOUR + timedelta(minutes=30), f"crashed-{number}")
            lines["missing"] = "1"
        elif number % 4 == 1:  # the recorder's fallback
            record = json.loads(event_line(rng, HOUR + timedelta(minutes=20), f"fb-{number}"))
            record["tenant_id"] = tenant
            key = f"fallback/{HOUR:%Y/%m/%d/%H}/{record['event_id']}.json"
            s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode() + b"\n")
            lines["other"] = json.dumps(record)
        else:  # arrived after the last partition run
            lines["other"] = late_by_tenant.get(tenant, lines["curated"])
    refs = [
        {
            "event_id": record["event_id"],
            "tenant_id": record["tenant_id"],
            "ts": record["timestamp"],
        }
        for lines in wanted.values()
        for record in (json.loads(lines["curated"]), json.loads(lines["other"]))
    ]
    expected = sum(2 - int("missing" in lines) for lines in wanted.values())
    return {"refs": refs, "expected": expected, "raw_mb": raw_mb, "tenants": len(wanted)}


def child_lookup(environment: str, refs_json: str, previous_root: str) -> None:
    """In the child: one lookup of every ref (new), or one per tenant (previous)."""
    if previous_root:
        sys.path.insert(0, previous_root)
    import boto3  # noqa: F401

    from chalicelib import wiring
    from chalicelib.settings import Settings
    from chalicelib.usage import parse_timestamp

    settings = Settings.from_env(json.loads(environment))
    refs = json.loads(refs_json)
    baseline = peak_rss_mb()
    counter = {"bytes": 0, "gets": 0}
    s3 = wiring.analytics_s3(settings)
    original = s3.get_object

    def counted_get(**kwargs: Any) -> Any:
        response = original(**kwargs)
        counter["gets"] += 1
        counter["bytes"] += int(response.get("ContentLength", 0))
        return response

    s3.get_object = counted_get
    started = time.monotonic()
    found = 0
    if previous_root:
        from chalicelib.budgets.repair import S3UsageEventFinder  # type: ignore[attr-defined]

        finder = S3UsageEventFinder(
            settings.analytics_bucket, settings.raw_prefix, settings.fallback_prefix, client=s3
        )
        by_tenant: dict[str, dict[str, Any]] = {}
        for ref in refs:
            by_tenant.setdefault(ref["tenant_id"], {})[ref["event_id"]] = parse_timestamp(ref["ts"])
        for wanted in by_tenant.values():
            found += len(finder.find(wanted))
        malformed = 0
    else:
        from chalicelib.analytics.lookup import EventRef

        lookup = wiring.usage_event_finder(settings).find(
            [EventRef(r["event_id"], r["tenant_id"], parse_timestamp(r["ts"])) for r in refs]
        )
        found, malformed = len(lookup.events), lookup.malformed_lines
    print(
        json.dumps(
            {
                "seconds": time.monotonic() - started,
                "found": found,
                "malformed": malformed,
                "gets": counter["gets"],
                "mb_read": counter["bytes"] / 1e6,
                "baseline_mb": baseline,
                "peak_mb": peak_rss_mb(),
            }
        )
    )


def run_child(environment: dict[str, str], refs: list[Any], previous_root: str = "") -> Any:
    code = (
        "from bench.budget_repair import child_lookup; "
        f"child_lookup({json.dumps(environment)!r}, {json.dumps(refs)!r}, {previous_root!r})"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    from local.running import moto_server

    with moto_server() as endpoint, tempfile.TemporaryDirectory() as old_dir:
        environment = provision(endpoint)
        started = time.monotonic()
        setup = fill(environment)
        took = time.monotonic() - started
        print(
            f"raw hour: {setup['raw_mb']:.0f} MB ({HOUR_EVENTS:,} events, {TENANTS} tenants), "
            f"curated; then {LATE_EVENTS:,} late events in the same hour and "
            f"{setup['tenants'] // 4} fallback events (set up in {took:.0f} s)"
        )
        print(
            f"{setup['tenants']} tenants x 2 expired reservations: {setup['expected']} events "
            f"to find, {len(setup['refs']) - setup['expected']} missing (released)"
        )
        print(f"\n{'lookup':<34} {'s':>7} {'found':>6} {'GETs':>6} {'MB read':>8} {'peak MB':>8}")
        new = run_child(environment, setup["refs"])
        rows = [("curated row groups + uncurated raw", new)]
        previous = previous_job(old_dir)
        if previous:
            rows.append(
                ("previous: raw hours, per tenant", run_child(environment, setup["refs"], previous))
            )
        for name, r in rows:
            print(
                f"{name:<34} {r['seconds']:>7.2f} {r['found']:>6} {r['gets']:>6} "
                f"{r['mb_read']:>8.0f} {r['peak_mb']:>8.0f}"
            )
        if len(rows) == 2:
            print(
                f"  speed-up {rows[1][1]['seconds'] / new['seconds']:.0f}x, "
                f"{rows[1][1]['mb_read'] / max(new['mb_read'], 0.001):.0f}x less read"
            )
        print("  (peak MB: the lookup process's VmHWM, imports included)")


if __name__ == "__main__":
    main()
