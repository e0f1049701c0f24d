"""Makes usage events durable: Firehose first, then a fallback S3 location the jobs also read."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import UsageNotDurableError
from chalicelib.layout import BucketLayout
from chalicelib.usage import UsageEvent

logger = logging.getLogger(__name__)

Destination = Literal["firehose", "fallback"]


class RecordWriter(Protocol):
    """What the recorder needs from Firehose (see chalicelib.firehose.FirehoseWriter)."""

    def put_records(
        self, records: Sequence[bytes], *, deadline: float | None = None
    ) -> list[bytes]: ...


class UsageRecorder:
    """Records usage events so that each one is durable before the caller is answered."""

    def __init__(
        self,
        writer: RecordWriter,
        bucket: str,
        fallback_prefix: str,
        s3_client: Any = None,
        fallback_reserve_s: float = 0.0,
    ) -> None:
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3")
        self._writer = writer
        self._bucket = bucket
        self._layout = BucketLayout(fallback_prefix=fallback_prefix)
        self._s3 = s3_client
        # The longest the fallback write can take (its client's timeouts and attempts).
        self._fallback_reserve_s = fallback_reserve_s

    def record(self, event: UsageEvent, *, deadline: float | None = None) -> Destination:
        """Make one event durable; raise UsageNotDurableError if nothing accepts it.

        With a `deadline` (monotonic), Firehose resends stop early enough for the fallback
        to be tried in full before it.
        """
        line = event.to_json_line()
        firehose_by = None if deadline is None else deadline - self._fallback_reserve_s
        if not self._writer.put_records([line], deadline=firehose_by):
            return "firehose"
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=self._layout.fallback_key(event.event_id, event.timestamp),
                Body=line,
                ContentType="application/x-ndjson",
            )
        except (ClientError, BotoCoreError) as exc:
            # The full event goes to the log so an operator can replay it: never lost silently.
            logger.error(
                "usage event not durable",
                extra={"usage_event": json.loads(line), "error": type(exc).__name__},
            )
            raise UsageNotDurableError(
                "Usage could not be recorded; the request was not completed. Please retry."
            ) from exc
        logger.warning("usage event written to fallback", extra={"event_id": event.event_id})
        return "fallback"
