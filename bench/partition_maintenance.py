"""Benchmark: partition maintenance on synthetic days (100k and 1M events) and the local
/usage-style query over a month of 10M events; prints its figures.

Run: `python -m bench.partition_maintenance` (or `make bench`, with the other benchmarks).

Maintenance runs the real job in a child process against a moto S3/Glue server (the parent
serves it), so the child's peak RSS is the job's alone; the synthetic day is cut into ~5 MiB
objects per arrival hour like Firehose's buffers, with 1% redelivered duplicates and a few
fallback objects. Baselines measured in the same run: fetching the same objects without
parsing them, and `json.loads` of every line (what a plain-Python job would start with).

The query part writes a month of curated Parquet (one object per day) to an in-memory stand-in
for S3, loads it through chalicelib's DuckDBEngine as the local API does, and times the
per-tenant monthly query, against a COUNT(*) over the same table.

Sizes can be changed with BENCH_DAY_EVENTS (comma-separated) and BENCH_QUERY_EVENTS; the
3M-event day is there for the 10M extrapolation.
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
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DAY = date(2025, 12, 7)
# 3M is there for the 10M extrapolation: like 10M, and unlike 100k, it is past the write slice.
_DEFAULT_DAYS = "100000,1000000,3000000"
DAY_SIZES = tuple(int(n) for n in os.environ.get("BENCH_DAY_EVENTS", _DEFAULT_DAYS).split(","))
QUERY_EVENTS = int(os.environ.get("BENCH_QUERY_EVENTS", "10000000"))
TENANTS = 200
DUPLICATE_RATE = 0.01
FALLBACK_EVENTS = 100
OBJECT_BYTES = 5 * 1024 * 1024  # Firehose's buffer size in analytics_infra/template.yaml
REGION = "us-east-1"
LAMBDA_LIMIT_S = 900
LAMBDA_LIMIT_MB = 10_240


# --------------------------------------------------------------------------- synthetic day


def event_line(rng: random.Random, moment: datetime, event_id: str) -> str:
    """One schema-v1 event as the chat path writes it (about 520 bytes)."""
    tenant = rng.randrange(TENANTS)
    input_tokens = rng.randrange(20, 2000)
    output_tokens = rng.randrange(1, 500)
    status = "ok" if rng.random() > 0.02 else "error"
    cost = (input_tokens * 25 + output_tokens * 125) / 100_000_000
    return json.dumps(
        {
            "event_id": event_id,
            "schema_version": 1,
            "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{moment.microsecond // 1000:03d}Z",
            "tenant_id": f"tenant-{tenant:04d}",
            "user_id": f"user-{tenant:04d}-{rng.randrange(20):02d}",
            "model_id": "anthropic.claude-3-haiku-20240307-v1:0",
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": 0,
            "cache_write_input_tokens": 0,
            "total_tokens": input_tokens + output_tokens,
            "status": status,
            "error_code": None if status == "ok" else "ModelErrorException",
            "latency_ms": rng.randrange(200, 4000),
            "cost_usd": f"{cost:.8f}",
            "price_version": "2026-11-27",
            "request_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "stage": "bench",
        },
        separators=(",", ":"),
    )


def synthetic_objects(events: int, seed: int = 1) -> Iterator[tuple[str, bytes]]:
    """(key, body) of a day's raw and fallback objects: ~5 MiB per object, by arrival hour."""
    rng = random.Random(seed)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    hours: dict[int, list[str]] = {hour: [] for hour in range(24)}
    redelivered: list[tuple[int, str]] = []
    for n in range(events):
        moment = start + timedelta(microseconds=int(n * 86_400_000_000 / events))
        line = event_line(rng, moment, str(uuid.UUID(int=rng.getrandbits(128))))
        if n < FALLBACK_EVENTS:
            yield f"fallback/{moment:%Y/%m/%d/%H}/{n}.json", (line + "\n").encode()
            continue
        hours[moment.hour].append(line)
        if rng.random() < DUPLICATE_RATE:
            redelivered.append((min(moment.hour + 1, 23), line))
    for hour, line in redelivered:
        hours[hour].append(line)
    for hour, lines in hours.items():
        chunk: list[str] = []
        size = 0
        part = 0
        for line in lines:
            chunk.append(line)
            size += len(line) + 1
            if size >= OBJECT_BYTES:
                yield _raw_key(hour, part), ("\n".join(chunk) + "\n").encode()
                chunk, size, part = [], 0, part + 1
        if chunk:
            yield _raw_key(hour, part), ("\n".join(chunk) + "\n").encode()


def _raw_key(hour: int, part: int) -> str:
    return (
        f"raw/{DAY:%Y/%m/%d}/{hour:02d}/bedrock-metering-bench-usage-events-1-"
        f"{DAY:%Y-%m-%d}-{hour:02d}-{part:02d}-00-{uuid.UUID(int=hour * 1000 + part)}"
    )


# --------------------------------------------------------------------------- maintenance


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Unlike ru_maxrss, it is not inherited from
    the parent across fork and exec, so it is the job's own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_settings(endpoint: str, bucket: str = "") -> Any:
    """The stage's settings on the moto server: wiring's clients go there, dummy credentials."""
    from chalicelib.settings import Settings

    return Settings.from_env(
        {"AWS_REGION": REGION, "AWS_ENDPOINT_URL": endpoint, "ANALYTICS_BUCKET": bucket}
    )


def child_job(bucket: str, endpoint: str) -> None:
    """Run in the child: the scheduled partition maintenance for DAY (as the deployed function
    runs it, through wiring), then its timings and peak RSS as JSON."""
    import awswrangler  # noqa: F401  (loaded before the baseline, as a Lambda's init would)
    import boto3  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    from chalicelib import wiring

    settings = bench_settings(endpoint, bucket)
    baseline_mb = peak_rss_mb()
    marks: list[tuple[float, str]] = []
    now = datetime(2025, 12, 9, tzinfo=UTC)
    started = time.monotonic()
    summary = wiring.run_partition_maintenance(
        settings,
        now,
        [(now.date() - DAY).days],
        force=True,
        progress=lambda message: marks.append((time.monotonic() - started, message)),
    )
    seconds = time.monotonic() - started
    (result,) = summary["partitions"]
    counted = next(t for t, m in marks if "duplicates dropped" in m)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "read_parse_dedupe_s": counted,
                "write_s": seconds - counted,
                "lines": result["lines"],
                "events": result["events"],
                "duplicates": result["duplicates"],
                "baseline_mb": baseline_mb,
                "peak_mb": peak_rss_mb(),
            }
        )
    )


def run_child(bucket: str, endpoint: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    code = f"from bench.partition_maintenance import child_job; child_job({bucket!r}, {endpoint!r})"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{completed.stderr[-4000:]}")
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def create_catalog(bucket: str, endpoint: str) -> None:
    """The template's Glue table, pointed at this run's bucket (one bucket per day size)."""
    from chalicelib import wiring
    from local.provision import load_template

    table = load_template()["Resources"]["UsageTable"]["Properties"]["TableInput"]
    table = json.loads(json.dumps(table))
    table["StorageDescriptor"]["Location"] = f"s3://{bucket}/usage/"
    glue = wiring.client("glue", bench_settings(endpoint))
    databases = {d["Name"] for d in glue.get_databases()["DatabaseList"]}
    if "bedrock_metering_db" not in databases:
        glue.create_database(DatabaseInput={"Name": "bedrock_metering_db"})
    else:
        glue.delete_table(DatabaseName="bedrock_metering_db", Name=table["Name"])
    glue.create_table(DatabaseName="bedrock_metering_db", TableInput=table)


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_maintenance(events: int, endpoint: str) -> dict[str, Any]:
    from chalicelib import wiring

    bucket = f"bench-day-{events}"
    s3 = wiring.client("s3", bench_settings(endpoint))
    s3.create_bucket(Bucket=bucket)
    create_catalog(bucket, endpoint)
    bodies: dict[str, bytes] = {}
    for key, body in synthetic_objects(events):
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        bodies[key] = body
    lines = sum(body.count(b"\n") for body in bodies.values())

    def fetch_all() -> None:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: s3.get_object(Bucket=bucket, Key=k)["Body"].read(), bodies))

    def json_all() -> None:
        for body in bodies.values():
            for line in body.splitlines():
                json.loads(line)

    fetch_s = timed(fetch_all)
    json_s = timed(json_all)
    bodies.clear()
    result = run_child(bucket, endpoint)
    result.update(objects_lines=lines, fetch_s=fetch_s, json_s=json_s)
    return result


# --------------------------------------------------------------------------- query


class MemoryS3:
    """Just enough of an S3 client for DuckDBEngine: list and get from a dict."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_paginator(self, _name: str) -> MemoryS3:
        return self

    def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
        del Bucket
        keys = sorted(k for k in self.objects if k.startswith(Prefix))
        return [{"Contents": [{"Key": k, "ETag": str(len(self.objects[k]))} for k in keys]}]

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        del Bucket
        return {"Body": io.BytesIO(self.objects[Key])}


def synthetic_month(events: int, seed: int = 2) -> dict[str, bytes]:
    """A month of curated Parquet, one object per day, as the job writes it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from chalicelib.analytics.schema import curated_arrow_schema

    schema = curated_arrow_schema(with_partitions=False)
    rng = np.random.default_rng(seed)
    days = 30
    per_day = events // days
    objects: dict[str, bytes] = {}
    for number in range(days):
        day = date(2025, 11, 1) + timedelta(days=number)
        epoch = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1e6)
        micros = np.sort(rng.integers(0, 86_400_000_000, per_day)) + epoch
        stamps = pa.array(micros, pa.timestamp("us", tz="UTC"))
        tenant_index = rng.integers(0, TENANTS, per_day)
        tenants = pa.DictionaryArray.from_arrays(
            pa.array(tenant_index, pa.int32()),
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
        }
        table = pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
        order = pc.sort_indices(table, sort_keys=[("tenant_id", "ascending")])
        buffer = io.BytesIO()
        pq.write_table(table.take(order), buffer, compression="snappy")
        key = f"usage/year={day:%Y}/month={day:%m}/day={day:%d}/part-{number}.snappy.parquet"
        objects[key] = buffer.getvalue()
    return objects


def bench_query(events: int) -> dict[str, float]:
    from chalicelib.analytics.engines import DuckDBEngine
    from chalicelib.analytics.queries import ALL_TENANTS_USAGE, TENANT_DAILY_USAGE
    from chalicelib.analytics.reports import Period

    generate_s = time.perf_counter()
    objects = synthetic_month(events)
    generate_s = time.perf_counter() - generate_s
    engine = DuckDBEngine(
        s3=MemoryS3(objects),
        bucket="bench",
        prefix="usage/",
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


def extrapolation(results: dict[int, dict[str, Any]], target: int = 10_000_000) -> str:
    """What the measured days imply for a `target`-event day in one Lambda invocation.

    With two sizes or more, time and peak memory are fitted as fixed + per-line on the two
    largest (the readers' buffers and the write slice of MAX_ROWS_PER_FILE rows stop growing
    once a day is that big); with one, they are scaled linearly.
    """
    sizes = sorted(results)
    big = results[sizes[-1]]
    if len(sizes) >= 2:
        small = results[sizes[-2]]
        lines = big["lines"] - small["lines"]
        per_line_s = (big["seconds"] - small["seconds"]) / lines
        per_line_mb = (big["peak_mb"] - small["peak_mb"]) / lines
        seconds = big["seconds"] + per_line_s * (target - big["lines"])
        peak = big["peak_mb"] + per_line_mb * (target - big["lines"])
        how = f"fitted on {sizes[-2]:,} and {sizes[-1]:,} ({per_line_mb * 1e6:.0f} bytes/line)"
    else:
        seconds = big["seconds"] * target / big["lines"]
        peak = big["baseline_mb"] + (big["peak_mb"] - big["baseline_mb"]) * target / big["lines"]
        how = f"scaled linearly from {sizes[-1]:,}"
    return (
        f"\n{target:,}-event day, {how}: ~{seconds:.0f} s ({seconds / LAMBDA_LIMIT_S:.0%} of "
        f"Lambda's 15 min) and ~{peak:,.0f} MB peak ({peak / LAMBDA_LIMIT_MB:.0%} of 10 GB)"
    )


def main() -> None:
    """Run both benchmarks and print their figures."""
    from local.running import moto_server

    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.machine()}; S3/Glue: moto server on loopback"
    )
    results: dict[int, dict[str, Any]] = {}
    with moto_server() as endpoint:
        print("\npartition maintenance (one UTC day, child process; rates are raw lines/s)")
        print(
            f"{'events':>9} {'lines':>9} {'job s':>7} {'lines/s':>9} {'read+dedupe s':>13} "
            f"{'write s':>7} {'peak MB':>8} {'import MB':>9} {'fetch-only':>10} {'json.loads':>10}"
        )
        for events in DAY_SIZES:
            r = bench_maintenance(events, endpoint)
            results[events] = r
            rate = r["lines"] / r["seconds"]
            print(
                f"{events:>9} {r['lines']:>9} {r['seconds']:>7.1f} {rate:>9.0f} "
                f"{r['read_parse_dedupe_s']:>13.1f} {r['write_s']:>7.1f} {r['peak_mb']:>8.0f} "
                f"{r['baseline_mb']:>9.0f} {r['seconds'] / r['fetch_s']:>9.1f}x "
                f"{r['seconds'] / r['json_s']:>9.2f}x"
            )
        print(
            "  (fetch-only / json.loads: job time as a multiple of just GETting the objects, and "
            "of json.loads on every line, measured in the same run)"
        )

    print(extrapolation(results))

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
