"""meterctl analytics commands: `sql`, `usage` and `backfill` against the current target."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from chalicelib.analytics.reports import COUNTERS
from meterctl import accounts, api
from meterctl.target import CliError, Target

DEFAULT_DATABASE = "bedrock_metering_db"
DEFAULT_TABLE = "token_usage_logs"
DEFAULT_WORKGROUP = "bedrock-metering-workgroup"
DEFAULT_CURATED_PREFIX = "usage/"


def register(commands: Any) -> None:
    """Add the analytics subcommands to meterctl's parser."""
    sql = commands.add_parser(
        "sql",
        help="run one Athena-dialect SQL statement on the target and print the result "
        "(DuckDB on the local stack, Athena on AWS)",
    )
    sql.add_argument("statement", nargs="?", help="the SQL; omit (or '-') to read stdin")
    sql.add_argument("--file", "-f", help="read the SQL from this file")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sql.set_defaults(handler=cmd_sql)

    usage = commands.add_parser(
        "usage",
        help="a tenant's usage report (GET /usage as that tenant's user), or every "
        "tenant's with --all (GET /admin/usage, admins only)",
    )
    usage.add_argument("--from", dest="first", help="first day, YYYY-MM-DD (default: month start)")
    usage.add_argument("--to", dest="last", help="last day, YYYY-MM-DD (default: today, UTC)")
    usage.add_argument("--all", action="store_true", help="every tenant (admin)")
    usage.add_argument("--tenant", help="with --all: only this tenant")
    usage.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    accounts.add_credential_arguments(usage)
    usage.set_defaults(handler=cmd_usage)

    backfill = commands.add_parser(
        "backfill",
        help="rebuild the curated usage partitions of a range of UTC days from the raw and "
        "fallback events (what the schedules do, for any days; shows progress)",
    )
    backfill.add_argument("--from", dest="first", required=True, help="first day, YYYY-MM-DD")
    backfill.add_argument("--to", dest="last", help="last day (default: --from)")
    backfill.add_argument(
        "--force", action="store_true", help="rebuild even days whose inputs have not changed"
    )
    backfill.add_argument(
        "--lateness-hours",
        type=int,
        default=None,
        help="hours after each day to read for late events (default: the job's, 2)",
    )
    backfill.add_argument(
        "--allow-shrink",
        action="store_true",
        help="accept a partition with fewer events than its last build (raw data deleted)",
    )
    backfill.set_defaults(handler=cmd_backfill)


# --------------------------------------------------------------------------- sql


def query_engine(target: Target) -> Any:
    """DuckDB over the local stack's curated Parquet, or Athena in the target's workgroup."""
    from chalicelib.analytics.engines import AthenaEngine, DuckDBEngine

    database = target.outputs.get("GlueDatabaseName") or DEFAULT_DATABASE
    if target.endpoint_url:
        return DuckDBEngine(
            s3=target.client("s3"),
            bucket=target.get("AnalyticsBucketName"),
            prefix=os.environ.get("CURATED_PREFIX", DEFAULT_CURATED_PREFIX),
            database=database,
            table=target.outputs.get("GlueTableName") or DEFAULT_TABLE,
        )
    import boto3

    return AthenaEngine(
        database=database,
        workgroup=target.outputs.get("AthenaWorkGroupName") or DEFAULT_WORKGROUP,
        boto3_session=boto3.session.Session(region_name=target.region),
    )


def cmd_sql(args: argparse.Namespace, target: Target) -> int:
    from chalicelib.errors import AnalyticsUnavailableError

    if args.file:
        with open(args.file, encoding="utf-8") as handle:
            text = handle.read()
    elif args.statement and args.statement != "-":
        text = args.statement
    else:
        text = sys.stdin.read()
    if not text.strip():
        raise CliError("No SQL given.")
    try:
        result = query_engine(target).query(text)
    except AnalyticsUnavailableError as exc:
        raise CliError(f"{exc.message} {exc.detail}".strip()) from None
    print(render(result.columns, result.rows, args.format), end="")
    return 0


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], style: str = "table") -> str:
    """A result as an aligned text table, CSV or JSON lines."""
    if style == "json":
        return "".join(
            json.dumps(dict(zip(columns, row, strict=True)), default=str) + "\n" for row in rows
        )
    cells = [[_cell(value) for value in row] for row in rows]
    if style == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(cells)
        return buffer.getvalue()
    widths = [len(name) for name in columns]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    numeric = [
        bool(rows) and all(_is_number(row[i]) or row[i] is None for row in rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return " | ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(columns)), "-+-".join("-" * width for width in widths)]
    out += [line(row) for row in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, Decimal):
        text = format(value, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)


# --------------------------------------------------------------------------- usage

# The report's counters, in the order the API documents them, then the cost.
USAGE_COLUMNS = (*COUNTERS, "cost_usd")


def cmd_usage(args: argparse.Namespace, target: Target) -> int:
    from urllib.parse import urlencode

    query = {"from": args.first, "to": args.last}
    if args.tenant:
        if not args.all:
            raise CliError("--tenant filters the --all report; a user sees only their tenant.")
        query["tenant_id"] = args.tenant
    path = "/admin/usage" if args.all else "/usage"
    encoded = urlencode({key: value for key, value in query.items() if value})
    response = api.call(
        target, "GET", path + (f"?{encoded}" if encoded else ""), accounts.token_for(args, target)
    )
    report = api.require_ok(response)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if args.all:
        rows = [
            [t["tenant_id"], *(t["totals"][c] for c in USAGE_COLUMNS)] for t in report["tenants"]
        ]
        print(f"All tenants, {report['from']} to {report['to']}")
        print(render(["tenant_id", *USAGE_COLUMNS], rows), end="")
        return 0
    rows = [[d["date"], *(d[c] for c in USAGE_COLUMNS)] for d in report["days"]]
    rows.append(["total", *(report["totals"][c] for c in USAGE_COLUMNS)])
    print(f"Tenant {report['tenant_id']}, {report['from']} to {report['to']}")
    print(render(["date", *USAGE_COLUMNS], rows), end="")
    return 0


# --------------------------------------------------------------------------- backfill


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CliError(f"{name} must be a date as YYYY-MM-DD.") from None


@contextlib.contextmanager
def _aws_environment(target: Target) -> Iterator[None]:
    """awswrangler builds its own clients: point them at the local endpoint when there is one."""
    values = {"AWS_REGION": target.region, "AWS_DEFAULT_REGION": target.region}
    if target.endpoint_url:
        values.update(
            AWS_ENDPOINT_URL=target.endpoint_url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 (moto's dummy credentials)
        )
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cmd_backfill(args: argparse.Namespace, target: Target) -> int:
    import boto3

    from chalicelib.analytics.partitions import PartitionJobConfig, job
    from chalicelib.errors import MeteringError

    first = _day(args.first, "--from")
    last = _day(args.last, "--to") if args.last else first
    now = datetime.now(UTC)
    if first > last:
        raise CliError("--from is after --to.")
    if last > now.date():
        raise CliError(f"--to is in the future (today is {now.date()} UTC).")
    config = PartitionJobConfig(
        bucket=target.get("AnalyticsBucketName"),
        database=target.outputs.get("GlueDatabaseName") or DEFAULT_DATABASE,
        table=target.outputs.get("GlueTableName") or DEFAULT_TABLE,
        curated_prefix=os.environ.get("CURATED_PREFIX", DEFAULT_CURATED_PREFIX),
    )
    if args.lateness_hours is not None:
        if not 0 <= args.lateness_hours <= 48:
            raise CliError("--lateness-hours must be between 0 and 48.")
        config = PartitionJobConfig(**{**config.__dict__, "lateness_hours": args.lateness_hours})
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    results = []
    with _aws_environment(target):
        session = boto3.session.Session(region_name=target.region)
        s3 = session.client("s3")
        for number, day in enumerate(days, start=1):
            progress(f"day {number}/{len(days)}: {day}")
            try:
                result = job(
                    day=day,
                    now=now,
                    config=config,
                    s3=s3,
                    boto3_session=session,
                    force=args.force,
                    allow_shrink=args.allow_shrink,
                    progress=progress,
                )
            except MeteringError as exc:
                raise CliError(exc.message) from None
            results.append(result.summary())
    columns = ["day", "status", "input_objects", "lines", "events", "duplicates", "invalid_lines"]
    print(render(columns, [[r[c] for c in columns] for r in results]), end="")
    orphaned = {d: n for r in results for d, n in r["orphaned"].items()}
    if orphaned:
        print(
            f"warning: events outside their day's window were found for {orphaned}; "
            "rebuild those days with a larger --lateness-hours",
            file=sys.stderr,
        )
    return 0
