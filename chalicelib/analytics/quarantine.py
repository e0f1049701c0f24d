"""The quarantine: lines that are not valid events, set aside with their reason and origin.

One object per source object (`quarantine/<source key>.jsonl`), one JSON line per bad line:
`{"source": key, "line": n, "reason": "...", "text": "..."}` (`text_base64` instead when the
line is not UTF-8). The content depends only on the source object, so every run that reads it
writes the same object: overlapping runs and reruns agree, and nothing is counted twice.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.analytics.parsing import PoisonLine
from chalicelib.layout import BucketLayout

# A quarantined line longer than this is stored cut (the reason and position still point at
# the whole line in its source object, which is never changed).
MAX_TEXT_BYTES = 64 * 1024


@dataclass(frozen=True)
class QuarantinedLine:
    """One set-aside line as the quarantine lists it."""

    source: str
    line: int
    reason: str
    text: str  # the line as text (shown escaped if it was not UTF-8)
    quarantine_key: str


def record(line: PoisonLine) -> dict[str, Any]:
    """A poison line as its quarantine record."""
    text = line.text[:MAX_TEXT_BYTES]
    entry: dict[str, Any] = {"source": line.key, "line": line.line, "reason": line.reason}
    try:
        entry["text"] = text.decode("utf-8")
    except UnicodeDecodeError:
        entry["text_base64"] = base64.b64encode(text).decode()
    if len(line.text) > MAX_TEXT_BYTES:
        entry["truncated_from"] = len(line.text)
    return entry


def write(
    s3: Any, bucket: str, layout: BucketLayout, source_key: str, lines: Sequence[PoisonLine]
) -> str:
    """Set a source object's bad lines aside; return the quarantine object's key."""
    key = layout.quarantine_key(source_key)
    body = b"".join(
        json.dumps(record(line), ensure_ascii=True, separators=(",", ":")).encode() + b"\n"
        for line in sorted(lines, key=lambda item: item.line)
    )
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson")
    return key


def listing(
    s3: Any, bucket: str, layout: BucketLayout, under: str = ""
) -> Iterator[QuarantinedLine]:
    """Every quarantined line whose source key starts with `under` (e.g. `raw/2025/12/07/`)."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=layout.quarantine_prefix + under):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for raw in body.splitlines():
                if not raw.strip():
                    continue
                entry = json.loads(raw)
                text = entry.get("text")
                if text is None:
                    text = repr(base64.b64decode(entry.get("text_base64", "")))
                yield QuarantinedLine(
                    source=str(entry["source"]),
                    line=int(entry["line"]),
                    reason=str(entry["reason"]),
                    text=str(text),
                    quarantine_key=item["Key"],
                )
