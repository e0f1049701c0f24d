"""Raw usage lines -> schema-v1 events: one rule for validity (Python), Arrow as its fast path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Any

from chalicelib.analytics.schema import COST_SCALE, GLUE_COLUMN_TYPES, arrow_type
from chalicelib.errors import MeteringError
from chalicelib.pricing import parse_usd
from chalicelib.usage import FIELD_DEFAULTS, FIELDS, SCHEMA_VERSION, STATUSES, parse_timestamp

# Every field must be present and non-null except the error code of a successful call; a
# field with a schema default (request_count) may be absent or null.
OPTIONAL_FIELDS = frozenset({"error_code"})
# Counts that cannot be negative (request_count has its own floor of 1).
NON_NEGATIVE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "total_tokens",
    "latency_ms",
)
_INTEGER_FIELDS = frozenset(
    name for name, kind in GLUE_COLUMN_TYPES.items() if kind in ("int", "bigint")
)
_INT_RANGES = {"int": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}
MAX_COST = Decimal(10) ** (38 - COST_SCALE)  # decimal(38,12) holds 26 integer digits
_COST_QUANTUM = Decimal(1).scaleb(-COST_SCALE)
_WIDE = Context(prec=80)  # quantize without rounding anything a decimal(38,12) can hold
# Python's datetime holds years 1 to 9999: an offset that leaves them is not an instant here.
_FIRST_INSTANT = datetime(1, 1, 1, tzinfo=UTC)
_LAST_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)

# The forms the fast path takes as they are. Anything else (a cost in exponent form, a
# timestamp with a space or 7 fractional digits) goes to the line-by-line path, which decides.
_PLAIN_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
_PLAIN_COST = r"^\d{1,26}(\.\d{1,12})?$"
_BLOCK_BYTES = 8 << 20
_NEWLINE, _OPEN_BRACE = ord("\n"), ord("{")


class InvalidEventError(MeteringError, ValueError):
    """A line that is not a valid schema-v1 event; the message is the reason."""


@dataclass(frozen=True)
class PoisonLine:
    """A line set aside: where it came from, why, and its bytes as they were."""

    key: str
    line: int  # 1-based physical line number in the object
    reason: str
    text: bytes


@dataclass(frozen=True)
class ParsedObject:
    """The valid events of one object (`event_schema`) and the lines that were not."""

    table: Any
    lines: int  # non-blank lines
    poison: tuple[PoisonLine, ...]


# --------------------------------------------------------------------------- the rule


def validate_record(value: Any) -> dict[str, Any]:
    """One decoded JSON line checked against schema v1: the typed event, or InvalidEventError.

    This is the definition of a valid event; the fast path below only ever accepts a subset
    of what this accepts, and never anything it refuses.
    """
    if not isinstance(value, dict):
        raise InvalidEventError("not a JSON object")
    record = _typed_fields(value)
    _check_rules(record)
    try:
        record["_ts"] = parse_timestamp(record["timestamp"])
    except ValueError as exc:
        raise InvalidEventError(f"timestamp does not parse: {exc}") from None
    return record


def _typed_fields(value: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name in FIELDS:
        item = value.get(name)
        if item is None:
            if name in FIELD_DEFAULTS:
                item = FIELD_DEFAULTS[name]
            elif name in OPTIONAL_FIELDS:
                record[name] = None
                continue
            else:
                raise InvalidEventError(f"{name} is missing")
        if name == "cost_usd":
            record[name] = _cost(item)
        elif name in _INTEGER_FIELDS:
            record[name] = _integer(name, item)
        else:
            record[name] = _string(name, item)
    return record


def _check_rules(record: dict[str, Any]) -> None:
    if record["schema_version"] != SCHEMA_VERSION:
        raise InvalidEventError(f"unknown schema_version {record['schema_version']}")
    if record["event_id"] == "":
        raise InvalidEventError("event_id is empty")
    if record["status"] not in STATUSES:
        raise InvalidEventError(f"unknown status {record['status']!r}")
    for name in NON_NEGATIVE_FIELDS:
        if record[name] < 0:
            raise InvalidEventError(f"{name} is negative")
    if record["request_count"] < 1:
        raise InvalidEventError("request_count must be at least 1")


def _string(name: str, item: Any) -> str:
    if not isinstance(item, str):
        raise InvalidEventError(f"{name} must be a string")
    try:
        item.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEventError(f"{name} is not valid Unicode (a lone surrogate)") from None
    return item


def _integer(name: str, item: Any) -> int:
    if isinstance(item, bool) or not isinstance(item, int):
        raise InvalidEventError(f"{name} must be an integer")
    low, high = _INT_RANGES[GLUE_COLUMN_TYPES[name]]
    if not low <= item <= high:
        raise InvalidEventError(f"{name} is out of range for {GLUE_COLUMN_TYPES[name]}")
    return item


def _cost(item: Any) -> Decimal:
    try:
        cost = parse_usd(item)
    except ValueError as exc:
        raise InvalidEventError(f"cost_usd: {exc}") from None
    if cost < 0:
        raise InvalidEventError("cost_usd is negative")
    if cost >= MAX_COST:
        raise InvalidEventError("cost_usd is out of range for decimal(38,12)")
    _sign, digits, exponent = cost.as_tuple()
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    # Trailing zeros are not precision ("0.1000000000000" is 0.1): count places without them,
    # exactly, rather than through Decimal.normalize, which rounds to the context's precision.
    while places > COST_SCALE and digits and digits[-1] == 0:
        digits, places = digits[:-1], places - 1
    if places > COST_SCALE:
        raise InvalidEventError(f"cost_usd has more than {COST_SCALE} decimal places")
    return cost.quantize(_COST_QUANTUM, context=_WIDE)


def parse_line(text: bytes) -> dict[str, Any]:
    """One raw line (bytes, without its newline) as a typed event, or InvalidEventError."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEventError("not UTF-8") from None
    try:
        value = json.loads(decoded)
    except RecursionError:
        raise InvalidEventError("not JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidEventError(f"not JSON: {exc.msg}") from None
    except ValueError as exc:  # e.g. an integer longer than Python converts
        raise InvalidEventError(f"not JSON: {exc}") from None
    return validate_record(value)


# --------------------------------------------------------------------------- Arrow shapes


def event_schema() -> Any:
    """Parsed events: the table's columns and types, the instant, and the source line."""
    import pyarrow as pa

    return pa.schema(
        [pa.field(name, arrow_type(GLUE_COLUMN_TYPES[name])) for name in FIELDS]
        + [pa.field("_ts", pa.timestamp("us", tz="UTC")), pa.field("_line", pa.int32())]
    )


def _json_schema() -> Any:
    """How the JSON reader types each field; cost and time stay text until checked."""
    import pyarrow as pa

    types = {"string": pa.string(), "int": pa.int64(), "bigint": pa.int64()}
    return pa.schema(
        [pa.field(name, types.get(GLUE_COLUMN_TYPES[name], pa.string())) for name in FIELDS]
    )


# --------------------------------------------------------------------------- one object


def parse_object(body: bytes, key: str) -> ParsedObject:
    """The events of a newline-delimited object; each bad line costs only itself.

    Well-formed objects take the vectorised path; an object it cannot vouch for line by line
    is parsed line by line with `parse_line`. Either way a line is kept exactly when
    `parse_line` would keep it.
    """
    fast = _parse_vectorised(body, key)
    return fast if fast is not None else parse_lines(body, key)


def parse_lines(body: bytes, key: str) -> ParsedObject:
    """The line-by-line path (also the reference the fast path is tested against)."""
    import pyarrow as pa

    records: list[dict[str, Any]] = []
    poison: list[PoisonLine] = []
    lines = 0
    for number, text in _numbered_lines(body):
        lines += 1
        try:
            record = parse_line(text)
        except InvalidEventError as exc:
            poison.append(PoisonLine(key, number, str(exc), text))
            continue
        record["_line"] = number
        records.append(record)
    table = pa.Table.from_pylist(records, schema=event_schema())
    return ParsedObject(table, lines, tuple(poison))


def _numbered_lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(body.split(b"\n"), start=1):
        text = line.rstrip(b"\r")
        if text.strip():
            yield number, text


def _parse_vectorised(body: bytes, key: str) -> ParsedObject | None:
    """Arrow's JSON reader and compute kernels, or None where they cannot be trusted alone.

    Arrow ignores blank lines, reads two objects on one line as two rows, passes invalid
    UTF-8 through, and (told to ignore them) skips unknown fields however deep: each of those
    sends the object down the line-by-line path, as does any cost or timestamp in a form the
    kernels might read differently from Python.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    raw = _read_json(body)
    if raw is None:
        return None
    rows = raw.num_rows
    stamps, costs = raw.column("timestamp"), raw.column("cost_usd")
    plain = pc.and_(
        pc.fill_null(pc.match_substring_regex(stamps, _PLAIN_TIMESTAMP), True),
        pc.fill_null(pc.match_substring_regex(costs, _PLAIN_COST), True),
    )
    if not pc.all(plain).as_py():
        return None
    schema = event_schema()
    try:
        columns = [_column(raw.column(name), name, schema) for name in FIELDS]
        instants = stamps.cast(pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    numbers = pa.array(range(1, rows + 1), pa.int32())
    table = pa.Table.from_arrays([*columns, instants, numbers], schema=schema)
    valid = _valid_rows(raw, table)
    if pc.all(valid).as_py():
        return ParsedObject(table, rows, ())
    bad = set(pc.indices_nonzero(pc.invert(valid)).to_pylist())
    texts = body.split(b"\n")
    poison = []
    for row in sorted(bad):
        text = texts[row].rstrip(b"\r")
        try:
            parse_line(text)
        except InvalidEventError as exc:
            poison.append(PoisonLine(key, row + 1, str(exc), text))
        else:  # the kernels refused a line the rule accepts: let the rule decide the object
            return None
    return ParsedObject(table.filter(valid), rows, tuple(poison))


def _read_json(body: bytes) -> Any:
    """The object as read by Arrow with one row per line, or None if Arrow's reading could
    differ from the line-by-line rule's (blank lines, a line that is not an object, several
    values on one line, invalid UTF-8, unknown fields, a value of the wrong JSON type)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.json as pj

    # `end`: the object without its final newline. No copy of the body is made on the way:
    # this runs on every byte of a day.
    end = len(body) - 1 if body.endswith(b"\n") else len(body)
    # Every line must open an object (so none is blank): besides being the only shape an
    # event has, this keeps Arrow's reader away from inputs it cannot take (pyarrow 25 crashes
    # the process, no exception, on an object whose first line is `null`).
    if not body.startswith(b"{") or body[end - 1 : end] == b"\n":
        return None
    data = np.frombuffer(body, dtype=np.uint8, count=end)
    newlines = np.flatnonzero(data == _NEWLINE)
    if not bool((data[newlines + 1] == _OPEN_BRACE).all()):
        return None
    if not body.isascii():  # ASCII is valid UTF-8; only other bytes need the full check
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        raw = pj.read_json(
            pa.BufferReader(body),
            read_options=pj.ReadOptions(use_threads=False, block_size=_BLOCK_BYTES),
            parse_options=pj.ParseOptions(
                explicit_schema=_json_schema(), unexpected_field_behavior="error"
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return raw if raw.num_rows == len(newlines) + 1 else None


def _column(column: Any, name: str, schema: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    typed = column.cast(schema.field(name).type)
    if name in FIELD_DEFAULTS:
        typed = pc.fill_null(typed, pa.scalar(FIELD_DEFAULTS[name], typed.type))
    return typed


def _valid_rows(raw: Any, table: Any) -> Any:
    """Per row, whether it passes every check of `validate_record` the reader has not made."""
    import pyarrow as pa
    import pyarrow.compute as pc

    checks = [pc.is_valid(table.column("_ts"))]
    for name in FIELDS:
        if name not in OPTIONAL_FIELDS:
            checks.append(pc.is_valid(table.column(name)))
    checks += [
        pc.equal(raw.column("schema_version"), SCHEMA_VERSION),
        pc.not_equal(table.column("event_id"), ""),
        pc.is_in(table.column("status"), value_set=pa.array(STATUSES, pa.string())),
        pc.greater_equal(table.column("request_count"), 1),
        pc.greater_equal(table.column("_ts"), pa.scalar(_FIRST_INSTANT, table.column("_ts").type)),
        pc.less_equal(table.column("_ts"), pa.scalar(_LAST_INSTANT, table.column("_ts").type)),
    ]
    checks += [pc.greater_equal(table.column(name), 0) for name in NON_NEGATIVE_FIELDS]
    valid = checks[0]
    for check in checks[1:]:
        valid = pc.and_kleene(valid, check)
    return pc.fill_null(valid, False)
