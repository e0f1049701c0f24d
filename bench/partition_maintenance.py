"""Benchmark: partition maintenance on synthetic days of 100k, 1M and 10M events (raw JSON
lines in, curated Parquet out, on a moto server), against the previous job, and the local
/usage-style query over a month of curated events; prints its figures.

Run: `python -m bench.partition_maintenance` (or `make bench`, with the other benchmarks; the
10M day takes several minutes and about 6 GB of memory in this process, for moto's copy of the
raw objects). Sizes: BENCH_DAY_EVENTS (comma-separated), BENCH_QUERY_EVENTS; BENCH_OLD=0 skips
the previous job.

Each job runs in a child process, so its peak RSS (VmHWM) is its own, as the scheduled
function's would be; it rebuilds the day whole (`force`), the largest run a day ever needs.
The day is cut into ~5 MiB objects per arrival hour like Firehose's buffers, with 1% of the
events redelivered in the next hour and a few in the fallback location. The previous job (the
one before generations, awswrangler's overwrite_partitions) is taken from git at PREVIOUS_JOB
into a temporary directory and run the same way on the same objects.
"""

from __future__ import annotations

import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIRST_DAY = date(2025, 12, 1)
_DEFAULT_DAYS = "100000,1000000,10000000"
DAY_SIZES = tuple(int(n) for n in os.environ.get("BENCH_DAY_EVENTS", _DEFAULT_DAYS).split(","))
QUERY_EVENTS = int(os.environ.get("BENCH_QUERY_EVENTS", "10000000"))
RUN_OLD = os.environ.get("BENCH_OLD", "1") != "0"
# The last commit whose partition job is the one this replaced (awswrangler, no generations).
PREVIOUS_JOB = "a2f6657"
TENANTS = 200
DUPLICATE_RATE = 0.01
FALLBACK_EVENTS = 100
OBJECT_BYTES = 5 * 1024 * 1024  # Firehose's buffer size in analytics_infra/template.yaml
REGION = "us-east-1"
TARGET_PEAK_MB = 1024
LATE_OBJECT_EVENTS = 5_000  # about 2 minutes of a 3.5M-event day
TARGET_RATE = 200_000

# One schema-v1 line, as the chat path writes it (about 520 bytes), filled by str.format.
_LINE = (
    '{{"event_id":"{id}","schema_version":1,"timestamp":"{ts}","tenant_id":"tenant-{t:04d}",'
    '"user_id":"user-{t:04d}-{u:02d}","model_id":"anthropic.claude-3-haiku-20240307-v1:0",'
    '"input_tokens":{i},"output_tokens":{o},"cache_read_input_tokens":0,'
    '"cache_write_input_tokens":0,"total_tokens":{total},"status":"{status}",'
    '"error_code":{error},"latency_ms":{latency},"cost_usd":"{cost}",'
    '"price_version":"2026-11-27","request_id":"{request}","stage":"bench"}}'
)


# --------------------------------------------------------------------------- synthetic day


def event_line(rng: random.Random, moment: datetime, event_id: str) -> str:
    """One schema-v1 event line."""
    tenant = rng.randrange(TENANTS)
    input_tokens = rng.randrange(20, 2000)
    output_tokens = rng.randrange(1, 500)
    ok = rng.random() > 0.02
    return _LINE.format(
        id=event_id,
        ts=moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
        t=tenant,
        u=rng.randrange(20),
        i=input_tokens,
        o=output_tokens,
        total=input_tokens + output_tokens,
        status="ok" if ok else "error",
        error="null" if ok else '"ModelErrorException"',
        latency=rng.randrange(200, 4000),
        cost=f"{(input_tokens * 25 + output_tokens * 125) / 100_000_000:.8f}",
        request=uuid.UUID(int=rng.getrandbits(128)),
    )


def synthetic_objects(day: date, events: int, seed: int = 1) -> Iterator[tuple[str, bytes]]:
    """(key, body) of a day's raw and fallback objects, hour by hour (~5 MiB each)."""
    rng = random.Random(seed)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    per_hour = events / 24
    redelivered: list[str] = []
    produced = 0
    for hour in range(24):
        lines, redelivered = redelivered, []
        end = round(per_hour * (hour + 1))
        for n in range(produced, end):
            moment = start + timedelta(microseconds=int(n * 86_400_000_000 / events))
            line = event_line(rng, moment, str(uuid.UUID(int=rng.getrandbits(128))))
            if n < FALLBACK_EVENTS:
                yield f"fallback/{moment:%Y/%m/%d/%H}/{n}.json", (line + "\n").encode()
                continue
            lines.append(line)
            if rng.random() < DUPLICATE_RATE and hour < 23:
                redelivered.append(line)
        produced = end
        yield from _hour_objects(day, hour, lines)


def _hour_objects(day: date, hour: int, lines: list[str]) -> Iterator[tuple[str, bytes]]:
    chunk: list[str] = []
    size = part = 0
    for line in lines:
        chunk.append(line)
        size += len(line) + 1
        if size >= OBJECT_BYTES:
            yield _raw_key(day, hour, part), ("\n".join(chunk) + "\n").encode()
            chunk, size, part = [], 0, part + 1
    if chunk:
        yield _raw_key(day, hour, part), ("\n".join(chunk) + "\n").encode()


def _raw_key(day: date, hour: int, part: int) -> str:
    return (
        f"raw/{day:%Y/%m/%d}/{hour:02d}/bedrock-metering-bench-usage-events-1-"
        f"{day:%Y-%m-%d}-{hour:02d}-{part:02d}-00-{uuid.UUID(int=hour * 1000 + part)}"
    )


# --------------------------------------------------------------------------- the jobs


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM); not inherited across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_job(environment: str, day_text: str, previous_root: str, force: bool = True) -> None:
    """In the child: the scheduled maintenance of one day through wiring, rebuilt whole or
    (`force=False`) incrementally (the previous job's own chalicelib when `previous_root` is
    set); prints timings and peak RSS."""
    if previous_root:
        sys.path.insert(0, previous_root)
        import awswrangler  # noqa: F401  (the previous job's import, before the baseline)
    import boto3  # noqa: F401
    import pyarrow  # noqa: F401

    from chalicelib import wiring
    from chalicelib.settings import Settings

    settings = Settings.from_env(json.loads(environment))
    day = date.fromisoformat(day_text)
    baseline_mb = peak_rss_mb()
    now = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=2)
    marks: dict[str, float] = {}
    started = time.monotonic()

    def progress(message: str) -> None:
        # The previous job has no such steps; its phases are left out of the report.
        for step in ("read ", "merged "):
            if f": {step}" in message:
                marks[step.strip()] = time.monotonic() - started

    summary = wiring.run_partition_maintenance(
        settings, now, [2], force=force, progress=None if previous_root else progress
    )
    seconds = time.monotonic() - started
    (result,) = summary["partitions"]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "read_s": marks.get("read", 0.0),
                "merge_s": marks.get("merged", 0.0) - marks.get("read", 0.0),
                "events": result["events"],
                "lines": result["lines"],
                "duplicates": result["duplicates"],
                "spill_mb": result.get("spill_bytes", 0) / 1e6,
                "files": result.get("files", 0),
                "baseline_mb": baseline_mb,
                "peak_mb": peak_rss_mb(),
                "cpu_s": os.times().user + os.times().system,
            }
        )
    )


def run_child(
    environment: dict[str, str], day: date, previous_root: str = "", *, force: bool = True
) -> dict[str, Any]:
    code = (
        "from bench.partition_maintenance import child_job; "
        f"child_job({json.dumps(environment)!r}, {day.isoformat()!r}, {previous_root!r}, "
        f"{force!r})"
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
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def previous_job(directory: str) -> str:
    """The previous job's chalicelib, from git, in `directory`; "" if git cannot give it."""
    import shutil
    import tarfile

    git = shutil.which("git")
    if git is None:
        return ""
    archive = subprocess.run(
        [git, "-C", str(ROOT), "archive", PREVIOUS_JOB, "chalicelib"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        return ""
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(directory, filter="data")
    return directory


def provision(endpoint: str) -> dict[str, str]:
    """The template's resources on the moto server; the stage environment they give."""
    from chalicelib import wiring
    from chalicelib.settings import Settings, env_from_outputs
    from local.provision import provision as provision_template

    local = Settings.from_env({"AWS_REGION": REGION, "AWS_ENDPOINT_URL": endpoint})
    outputs = provision_template(
        stage="bench", region=REGION, session=wiring.session(local), endpoint_url=endpoint
    )
    return {
        **env_from_outputs(outputs),
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
    }


def fill_day(environment: dict[str, str], day: date, events: int) -> dict[str, float]:
    """Put the synthetic day's objects; how many lines and bytes."""
    from chalicelib import wiring
    from chalicelib.settings import Settings

    s3 = wiring.client("s3", Settings.from_env(environment))
    bucket = environment["ANALYTICS_BUCKET"]
    lines = size = 0
    started = time.monotonic()
    for key, body in synthetic_objects(day, events):
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        lines += body.count(b"\n")
        size += len(body)
    return {"lines": lines, "mb": size / 1e6, "seconds": time.monotonic() - started}


def _add_late_object(environment: dict[str, str], day: date, events: int) -> int:
    """One more raw object in the day's last hour (what a 2-minute run finds); its size."""
    from chalicelib import wiring
    from chalicelib.settings import Settings

    rng = random.Random(99)
    start = datetime(day.year, day.month, day.day, 23, 58, tzinfo=UTC)
    lines = [
        event_line(rng, start + timedelta(milliseconds=n), str(uuid.UUID(int=rng.getrandbits(128))))
        for n in range(events)
    ]
    s3 = wiring.client("s3", Settings.from_env(environment))
    s3.put_object(
        Bucket=environment["ANALYTICS_BUCKET"],
        Key=f"raw/{day:%Y/%m/%d}/23/bedrock-metering-bench-usage-events-1-late-{uuid.uuid4()}",
        Body=("\n".join(lines) + "\n").encode(),
    )
    return events


# --------------------------------------------------------------------------- query


class MemoryS3:
    """Just enough of an S3 client for DuckDBEngine: list and get from a dict."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_paginator(self, _name: str) -> MemoryS3:
        return self

    def paginate(self, Bucket: str, Prefix: str, Delimiter: str = "") -> list[dict[str, Any]]:
        del Bucket
        keys = sorted(
            k
            for k in self.objects
            if k.startswith(Prefix) and (not Delimiter or Delimiter not in k[len(Prefix) :])
        )
        return [{"Contents": [{"Key": k, "ETag": str(len(self.objects[k]))} for k in keys]}]

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        del Bucket
        return {"Body": io.BytesIO(self.objects[Key])}


class MemoryCatalog:
    """The partitions of a month, each at its own folder."""

    def __init__(self, partitions: list[Any]) -> None:
        self._partitions = partitions

    def partitions(self) -> list[Any]:
        return self._partitions


def synthetic_month(events: int, seed: int = 2) -> tuple[dict[str, bytes], list[Any]]:
    """A month of curated Parquet, one object per day, and its partitions."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from chalicelib.analytics.catalog import Partition
    from chalicelib.analytics.schema import curated_arrow_schema

    schema = curated_arrow_schema(with_partitions=False)
    rng = np.random.default_rng(seed)
    days = 30
    per_day = events // days
    objects: dict[str, bytes] = {}
    partitions = []
    for number in range(days):
        day = date(2025, 11, 1) + timedelta(days=number)
        epoch = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1e6)
        micros = np.sort(rng.integers(0, 86_400_000_000, per_day)) + epoch
        stamps = pa.array(micros, pa.timestamp("us", tz="UTC"))
        tenants = pa.DictionaryArray.from_arrays(
            pa.array(rng.integers(0, TENANTS, per_day), pa.int32()),
            pa.array([f"tenant-{t:04d}" for t in range(TENANTS)]),
        ).cast(pa.string())
        ids = pc.binary_join_element_wise(
            f"evt-{number:02d}-", pc.cast(pa.array(np.arange(per_day)), pa.string()), ""
        )
        inputs = rng.integers(20, 2000, per_day)
        outputs = rng.integers(1, 500, per_day)
        status = pa.DictionaryArray.from_arrays(
            pa.array((rng.random(per_day) < 0.02).astype(np.int32)), pa.array(["ok", "error"])
        ).cast(pa.string())
        cost = pc.multiply(
            pa.array(inputs * 25 + outputs * 125).cast(pa.decimal128(20, 0)),
            pa.scalar(1, pa.decimal128(10, 8)),
        ).cast(pa.decimal128(38, 12))
        zeros = pa.array(np.zeros(per_day, dtype=np.int64))
        columns = {
            "event_id": ids,
            "schema_version": pa.repeat(pa.scalar(1, pa.int32()), per_day),
            "timestamp": pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ"),
            "tenant_id": tenants,
            "user_id": tenants,
            "model_id": pa.repeat(pa.scalar("anthropic.claude-3-haiku-20240307-v1:0"), per_day),
            "input_tokens": pa.array(inputs),
            "output_tokens": pa.array(outputs),
            "cache_read_input_tokens": zeros,
            "cache_write_input_tokens": zeros,
            "total_tokens": pa.array(inputs + outputs),
            "status": status,
            "error_code": pa.nulls(per_day, pa.string()),
            "latency_ms": pa.array(rng.integers(200, 4000, per_day)),
            "cost_usd": cost,
            "price_version": pa.repeat(pa.scalar("2026-11-27"), per_day),
            "request_id": ids,
            "stage": pa.repeat(pa.scalar("bench"), per_day),
            "request_count": pa.repeat(pa.scalar(1, pa.int64()), per_day),
        }
        table = pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
        order = pc.sort_indices(table, sort_keys=[("tenant_id", "ascending")])
        buffer = io.BytesIO()
        pq.write_table(table.take(order), buffer, compression="snappy")
        folder = f"usage/gen/year={day:%Y}/month={day:%m}/day={day:%d}/r0/"
        objects[folder + "part-0000.snappy.parquet"] = buffer.getvalue()
        values = (f"{day:%Y}", f"{day:%m}", f"{day:%d}")
        partitions.append(Partition(values, f"s3://bench/{folder}"))
    return objects, partitions


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_query(events: int) -> dict[str, float]:
    from chalicelib.analytics.engines import DuckDBEngine
    from chalicelib.analytics.queries import ALL_TENANTS_USAGE, TENANT_DAILY_USAGE
    from chalicelib.analytics.reports import Period

    generate_s = time.perf_counter()
    objects, partitions = synthetic_month(events)
    generate_s = time.perf_counter() - generate_s
    engine = DuckDBEngine(
        s3=MemoryS3(objects),
        catalog=MemoryCatalog(partitions),  # type: ignore[arg-type]
        database="bedrock_metering_db",
        table="token_usage_logs",
    )
    period = Period(date(2025, 11, 1), date(2025, 11, 30)).params()
    tenant = TENANT_DAILY_USAGE.bind(tenant_id="tenant-0007", **period)
    count_sql = "SELECT COUNT(*) FROM bedrock_metering_db.token_usage_logs"
    load_s = timed(lambda: engine.query(count_sql))
    rows = engine.query(count_sql).rows[0][0]

    def median(action: Callable[[], Any], runs: int = 7) -> float:
        return statistics.median(timed(action) for _ in range(runs))

    return {
        "events": float(rows),
        "parquet_mb": sum(len(b) for b in objects.values()) / 1e6,
        "generate_s": generate_s,
        "load_s": load_s,
        "count_s": median(lambda: engine.query(count_sql)),
        "tenant_month_s": median(lambda: engine.query(TENANT_DAILY_USAGE.sql, tenant)),
        "all_tenants_s": median(
            lambda: engine.query(ALL_TENANTS_USAGE.sql, tuple(period.values()))
        ),
    }


# --------------------------------------------------------------------------- report


def main() -> None:
    """Run both benchmarks and print their figures."""
    from local.running import moto_server

    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.machine()}; S3/Glue/DynamoDB: moto server on loopback (this process)"
    )
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as old_dir:
        environment = provision(endpoint)
        previous = previous_job(old_dir) if RUN_OLD else ""
        print(
            "\npartition maintenance: one UTC day rebuilt whole, in a child process "
            f"(targets: >= {TARGET_RATE:,} events/s, <= {TARGET_PEAK_MB} MB peak)"
        )
        header = (
            f"{'events':>10} {'raw MB':>7} {'job s':>7} {'read s':>6} {'merge s':>6} "
            f"{'events/s':>9} {'peak MB':>8} "
            f"{'spill MB':>8} {'files':>5} | {'old s':>7} {'old ev/s':>9} {'old MB':>7} "
            f"{'speed-up':>8}"
        )
        print(header)
        increments: dict[int, tuple[int, dict[str, Any]]] = {}
        for number, events in enumerate(DAY_SIZES):
            day = FIRST_DAY + timedelta(days=number)
            filled = fill_day(environment, day, events)
            new = run_child(environment, day)
            late = _add_late_object(environment, day, LATE_OBJECT_EVENTS)
            increment = run_child(environment, day, force=False)
            increments[events] = (late, increment)
            rate = new["events"] / new["seconds"]
            line = (
                f"{new['events']:>10} {filled['mb']:>7.0f} {new['seconds']:>7.1f} "
                f"{new['read_s']:>6.1f} {new['merge_s']:>6.1f} {rate:>9.0f} "
                f"{new['peak_mb']:>8.0f} {new['spill_mb']:>8.0f} {new['files']:>5} |"
            )
            if previous:
                old = run_child(environment, day, previous)
                old_rate = old["events"] / old["seconds"]
                line += (
                    f" {old['seconds']:>7.1f} {old_rate:>9.0f} {old['peak_mb']:>7.0f} "
                    f"{rate / old_rate:>7.2f}x"
                )
            print(line, flush=True)
        print("\nan incremental run after the full one: one new object of the last hour")
        print(f"{'day events':>10} {'new events':>10} {'run s':>7} {'peak MB':>8}")
        for events, (late, increment) in increments.items():
            print(
                f"{events:>10} {late:>10} {increment['seconds']:>7.1f} {increment['peak_mb']:>8.0f}"
            )
        print(
            "  (events: distinct events curated; raw MB: the day's raw and fallback objects; "
            "peak MB: the job process's VmHWM, imports included; old: the job at "
            f"{PREVIOUS_JOB}, awswrangler overwrite_partitions, same objects)"
        )

    print(f"\nlocal /usage-style query (DuckDB over {QUERY_EVENTS:,} curated events, 30 days)")
    q = bench_query(QUERY_EVENTS)
    print(
        f"  parquet {q['parquet_mb']:.0f} MB in 30 objects (generated in {q['generate_s']:.1f} s); "
        f"first query incl. load {q['load_s']:.2f} s"
    )
    print(f"  baseline COUNT(*)              {q['count_s'] * 1000:8.1f} ms")
    print(
        f"  one tenant, month, by day      {q['tenant_month_s'] * 1000:8.1f} ms  "
        f"({q['tenant_month_s'] / q['count_s']:.1f}x COUNT(*))"
    )
    print(
        f"  all tenants, month (admin)     {q['all_tenants_s'] * 1000:8.1f} ms  "
        f"({q['all_tenants_s'] / q['count_s']:.1f}x COUNT(*))"
    )


if __name__ == "__main__":
    main()
