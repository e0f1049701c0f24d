"""Firehose batching and resend of failed records only."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from chalicelib.firehose import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_RECORD_BYTES,
    FirehoseWriter,
    RecordTooLargeError,
    backoff_delay,
    batch_records,
)


def test_batches_hold_at_most_500_records() -> None:
    batches = batch_records([b"x"] * 1201)
    assert [len(batch) for batch in batches] == [500, 500, 201]
    assert MAX_BATCH_RECORDS == 500


def test_batches_hold_at_most_4_mib() -> None:
    record = b"y" * (MAX_RECORD_BYTES - 1)
    batches = batch_records([record] * 9)
    assert all(sum(map(len, batch)) <= MAX_BATCH_BYTES for batch in batches)
    assert [len(batch) for batch in batches] == [4, 4, 1]


def test_batching_keeps_order_and_every_record() -> None:
    records = [f"r{i}".encode() for i in range(1234)]
    assert [r for batch in batch_records(records) for r in batch] == records


def test_record_over_1000_kib_is_refused() -> None:
    with pytest.raises(RecordTooLargeError):
        batch_records([b"z" * (MAX_RECORD_BYTES + 1)])


def test_empty_input_makes_no_batches() -> None:
    assert batch_records([]) == []


def test_backoff_is_full_jitter_and_capped() -> None:
    assert backoff_delay(0, 0.05, 1.0, lambda: 0.999) < 0.05
    assert backoff_delay(10, 0.05, 1.0, lambda: 0.999) < 1.0
    assert backoff_delay(3, 0.05, 1.0, lambda: 0.0) == 0.0


class ScriptedFirehose:
    """Answers put_record_batch from a script; records what it was sent."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.calls: list[list[bytes]] = []

    def put_record_batch(self, DeliveryStreamName: str, Records: list[dict[str, bytes]]) -> Any:
        data = [r["Data"] for r in Records]
        self.calls.append(data)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        failed = step(data)
        return {
            "FailedPutCount": len(failed),
            "RequestResponses": [
                {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "slow down"}
                if d in failed
                else {"RecordId": "id"}
                for d in data
            ],
        }


def writer(client: ScriptedFirehose, attempts: int = 4) -> FirehoseWriter:
    return FirehoseWriter("stream", client=client, max_attempts=attempts, sleep=lambda _: None)


def test_partial_failure_resends_only_the_failed_records() -> None:
    records = [b"a\n", b"b\n", b"c\n", b"d\n"]
    client = ScriptedFirehose([lambda d: {b"b\n", b"d\n"}, lambda d: set()])
    assert writer(client).put_records(records) == []
    assert client.calls == [records, [b"b\n", b"d\n"]]


def test_records_still_failing_after_all_attempts_are_returned() -> None:
    client = ScriptedFirehose([lambda d: {b"b\n"}] * 3)
    assert writer(client, attempts=3).put_records([b"a\n", b"b\n"]) == [b"b\n"]
    assert client.calls == [[b"a\n", b"b\n"], [b"b\n"], [b"b\n"]]


def test_a_failed_call_resends_the_whole_batch() -> None:
    throttled = ClientError({"Error": {"Code": "ServiceUnavailableException"}}, "PutRecordBatch")
    client = ScriptedFirehose(
        [throttled, EndpointConnectionError(endpoint_url="x"), lambda d: set()]
    )
    assert writer(client).put_records([b"a\n"]) == []
    assert len(client.calls) == 3


def test_backoff_sleeps_between_attempts() -> None:
    sleeps: list[float] = []
    client = ScriptedFirehose([lambda d: set(d)] * 3)
    FirehoseWriter(
        "s", client=client, max_attempts=3, sleep=sleeps.append, rand=lambda: 1.0
    ).put_records([b"a\n"])
    assert sleeps == [0.05, 0.1]
