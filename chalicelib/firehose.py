"""Amazon Data Firehose writer: limit-aware batching, resend of failed records only."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws_errors import error_code
from chalicelib.errors import MeteringError

logger = logging.getLogger(__name__)

# PutRecordBatch service limits.
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_RECORD_BYTES = 1000 * 1024


class RecordTooLargeError(MeteringError):
    """A single record is larger than Firehose accepts."""


def batch_records(
    records: Sequence[bytes],
    max_records: int = MAX_BATCH_RECORDS,
    max_bytes: int = MAX_BATCH_BYTES,
) -> list[list[bytes]]:
    """Split records, in order, into batches that fit one PutRecordBatch call."""
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    current_bytes = 0
    for record in records:
        size = len(record)
        if size > MAX_RECORD_BYTES:
            raise RecordTooLargeError(
                f"record of {size} bytes exceeds Firehose's {MAX_RECORD_BYTES}-byte limit"
            )
        if current and (len(current) == max_records or current_bytes + size > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(record)
        current_bytes += size
    if current:
        batches.append(current)
    return batches


def backoff_delay(attempt: int, base_s: float, cap_s: float, rand: Callable[[], float]) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt))."""
    return float(rand() * min(cap_s, base_s * (2**attempt)))


class FirehoseWriter:
    """Writes records to one delivery stream, resending only what Firehose did not accept."""

    def __init__(
        self,
        stream_name: str,
        *,
        client: Any = None,
        max_attempts: int = 4,
        base_delay_s: float = 0.05,
        max_delay_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        attempt_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if client is None:
            import boto3

            client = boto3.client("firehose")
        self._client = client
        self._stream_name = stream_name
        self._max_attempts = max_attempts
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._sleep = sleep
        self._rand = rand
        # The longest one PutRecordBatch can take (the client's connect + read timeouts):
        # no attempt is started that could end after the caller's deadline.
        self._attempt_s = attempt_s
        self._clock = clock

    def put_records(
        self, records: Sequence[bytes], *, deadline: float | None = None
    ) -> list[bytes]:
        """Send every record; return those still not accepted after all attempts.

        With a `deadline` (on the writer's monotonic clock), a resend is made only if it can
        finish by then: the caller keeps the rest of its time for the fallback. The first
        attempt is always made.
        """
        undelivered: list[bytes] = []
        for batch in batch_records(records):
            undelivered.extend(self._put_batch(batch, deadline))
        return undelivered

    def _put_batch(self, batch: list[bytes], deadline: float | None) -> list[bytes]:
        pending = batch
        for attempt in range(self._max_attempts):
            if attempt:
                delay = backoff_delay(
                    attempt - 1, self._base_delay_s, self._max_delay_s, self._rand
                )
                if deadline is not None and self._clock() + delay + self._attempt_s > deadline:
                    logger.warning(
                        "firehose resend skipped: no time left before the fallback",
                        extra={"stream": self._stream_name, "attempts": attempt},
                    )
                    break
                self._sleep(delay)
            pending = self._send_once(pending)
            if not pending:
                return []
        logger.warning(
            "firehose did not accept records",
            extra={"stream": self._stream_name, "records": len(pending)},
        )
        return pending

    def _send_once(self, records: list[bytes]) -> list[bytes]:
        """One PutRecordBatch call; returns the records that failed (all, if the call did)."""
        try:
            response = self._client.put_record_batch(
                DeliveryStreamName=self._stream_name,
                Records=[{"Data": record} for record in records],
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning("firehose put_record_batch failed", extra={"error": error_code(exc)})
            return records
        if not response.get("FailedPutCount"):
            return []
        results = response.get("RequestResponses", [])
        if len(results) != len(records):
            # Cannot tell which failed: resend all (duplicates are removed downstream).
            return records
        return [
            record
            for record, result in zip(records, results, strict=True)
            if result.get("ErrorCode")
        ]
