"""meterctl analytics commands: `sql`, `usage`, `backfill` and `quarantine` against the
current target."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from chalicelib.analytics.reports import COUNTERS
from meterctl import accounts, api
from meterctl.target import CliError, Target


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
    usage.add_argument(
        "--by-model", action="store_true", help="one row per model for the period, not per day"
    )
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
    backfill.add_argument(
        "--wait",
        type=float,
        default=BACKFILL_WAIT_S,
        help="seconds to wait for a day another run is curating (default 600)",
    )
    backfill.set_defaults(handler=cmd_backfill)

    quarantine = commands.add_parser(
        "quarantine",
        help="the lines of raw and fallback objects that are not valid usage events",
    ).add_subparsers(dest="action", required=True)
    listing = quarantine.add_parser(
        "list", help="list quarantined lines: source object, line number, reason, text"
    )
    listing.add_argument(
        "--from", dest="first", help="first UTC day of the source objects, YYYY-MM-DD"
    )
    listing.add_argument("--to", dest="last", help="last UTC day (default: --from)")
    listing.add_argument("--format", choices=["table", "json"], default="table")
    listing.set_defaults(handler=cmd_quarantine_list)
    redrive = quarantine.add_parser(
        "redrive",
        help="put corrected events (JSON lines, from a file or stdin) where the partition job "
        "reads them: the fallback location under each event's own hour",
    )
    redrive.add_argument("file", help="JSON lines of corrected events ('-' for stdin)")
    redrive.set_defaults(handler=cmd_quarantine_redrive)


# --------------------------------------------------------------------------- sql


def cmd_sql(args: argparse.Namespace, target: Target) -> int:
    from chalicelib import wiring
    from chalicelib.errors import AnalyticsUnavailableError, MeteringError

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
        # DuckDB over the local stack's curated Parquet, or Athena in the target's workgroup.
        result = wiring.query_engine(target.settings()).query(text)
    except AnalyticsUnavailableError as exc:
        raise CliError(f"{exc.message} {exc.detail}".strip()) from None
    except MeteringError as exc:
        raise CliError(exc.message) from None
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
    if args.all and args.by_model:
        rows = [
            [t["tenant_id"], m["model_id"], *(m[c] for c in USAGE_COLUMNS)]
            for t in report["tenants"]
            for m in t["models"]
        ]
        print(f"All tenants by model, {report['from']} to {report['to']}")
        print(render(["tenant_id", "model_id", *USAGE_COLUMNS], rows), end="")
        return 0
    if args.all:
        rows = [
            [t["tenant_id"], *(t["totals"][c] for c in USAGE_COLUMNS)] for t in report["tenants"]
        ]
        print(f"All tenants, {report['from']} to {report['to']}")
        print(render(["tenant_id", *USAGE_COLUMNS], rows), end="")
        return 0
    if args.by_model:
        rows = [[m["model_id"], *(m[c] for c in USAGE_COLUMNS)] for m in report["models"]]
        rows.append(["total", *(report["totals"][c] for c in USAGE_COLUMNS)])
        print(f"Tenant {report['tenant_id']} by model, {report['from']} to {report['to']}")
        print(render(["model_id", *USAGE_COLUMNS], rows), end="")
        return 0
    rows = [[d["date"], *(d[c] for c in USAGE_COLUMNS)] for d in report["days"]]
    rows.append(["total", *(report["totals"][c] for c in USAGE_COLUMNS)])
    print(f"Tenant {report['tenant_id']}, {report['from']} to {report['to']}")
    print(render(["date", *USAGE_COLUMNS], rows), end="")
    return 0


# --------------------------------------------------------------------------- backfill

BACKFILL_WAIT_S = 600.0  # a scheduled run of the same day finishes well within this


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CliError(f"{name} must be a date as YYYY-MM-DD.") from None


def cmd_backfill(args: argparse.Namespace, target: Target) -> int:
    from chalicelib import wiring
    from chalicelib.errors import MeteringError

    first = _day(args.first, "--from")
    last = _day(args.last, "--to") if args.last else first
    now = datetime.now(UTC)
    if first > last:
        raise CliError("--from is after --to.")
    if last > now.date():
        raise CliError(f"--to is in the future (today is {now.date()} UTC).")
    settings = target.settings()
    if args.lateness_hours is not None:
        if not 0 <= args.lateness_hours <= 48:
            raise CliError("--lateness-hours must be between 0 and 48.")
        settings = dataclasses.replace(settings, partition_lateness_hours=args.lateness_hours)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    # Oldest day first, each counted back from today, as the schedules count them.
    days_back = range((now.date() - first).days, (now.date() - last).days - 1, -1)
    try:
        summary = wiring.run_partition_maintenance(
            settings,
            now,
            days_back,
            force=args.force,
            allow_shrink=args.allow_shrink,
            progress=progress,
            keep_going=False,  # stop at the first failing day, with its reason
            wait_s=args.wait,
        )
    except MeteringError as exc:
        raise CliError(exc.message) from None
    results = summary["partitions"]
    columns = ["day", "status", "input_objects", "lines", "events", "duplicates", "quarantined"]
    print(render(columns, [[r[c] for c in columns] for r in results]), end="")
    orphaned = {d: n for r in results for d, n in r["orphaned"].items()}
    if orphaned:
        print(
            f"note: events outside their day's window were found for {orphaned}; they were "
            "re-filed under fallback/ for their own day: backfill those days to curate them",
            file=sys.stderr,
        )
    busy = [r["day"] for r in results if r["status"] == "busy"]
    if busy:
        print(f"warning: other runs held {', '.join(busy)} past --wait", file=sys.stderr)
    quarantined = sum(r["quarantined"] for r in results)
    if quarantined:
        print(f"note: {quarantined} line(s) quarantined: meterctl quarantine list", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- quarantine


def cmd_quarantine_list(args: argparse.Namespace, target: Target) -> int:
    from chalicelib import wiring
    from chalicelib.analytics import quarantine
    from chalicelib.layout import BucketLayout, day_path

    settings = target.settings()
    layout = BucketLayout(raw_prefix=settings.raw_prefix, fallback_prefix=settings.fallback_prefix)
    s3 = wiring.analytics_s3(settings)
    prefixes = [""]
    if args.first:
        first = _day(args.first, "--from")
        last = _day(args.last, "--to") if args.last else first
        if first > last:
            raise CliError("--from is after --to.")
        days = [first.fromordinal(n) for n in range(first.toordinal(), last.toordinal() + 1)]
        prefixes = [
            source + day_path(day)
            for source in (layout.raw_prefix, layout.fallback_prefix)
            for day in days
        ]
    lines = [
        line
        for prefix in prefixes
        for line in quarantine.listing(s3, settings.analytics_bucket, layout, under=prefix)
    ]
    if args.format == "json":
        for line in lines:
            print(json.dumps(dataclasses.asdict(line)))
        return 0
    rows = [[line.source, line.line, line.reason, _shortened(line.text)] for line in lines]
    print(render(["source", "line", "reason", "text"], rows), end="")
    return 0


def _shortened(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_quarantine_redrive(args: argparse.Namespace, target: Target) -> int:
    from chalicelib import wiring
    from chalicelib.analytics.parsing import InvalidEventError, parse_line
    from chalicelib.layout import BucketLayout

    if args.file == "-":
        raw = sys.stdin.buffer.read()
    else:
        with open(args.file, "rb") as handle:
            raw = handle.read()
    settings = target.settings()
    layout = BucketLayout(fallback_prefix=settings.fallback_prefix)
    lines = [line for line in raw.split(b"\n") if line.strip()]
    events = []
    for number, line in enumerate(lines, start=1):
        try:
            events.append((parse_line(line.strip()), line.strip()))
        except InvalidEventError as exc:
            raise CliError(f"line {number} is still not a valid event: {exc}") from None
    s3 = wiring.analytics_s3(settings)
    for record, line in events:
        key = layout.fallback_key(record["event_id"], record["_ts"])
        s3.put_object(Bucket=settings.analytics_bucket, Key=key, Body=line + b"\n")
        print(f"{record['event_id']} -> s3://{settings.analytics_bucket}/{key}")
    print(
        f"{len(events)} event(s) re-driven; the next run for their days curates them "
        "(meterctl backfill --from <day> for days older than the sweep).",
        file=sys.stderr,
    )
    return 0
