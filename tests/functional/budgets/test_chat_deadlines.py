"""Deadlines on POST /bedrock/chat: answer before API Gateway gives up, record what happened.

A model too slow for the deadline: 504 with X-Request-Id, an `aborted` event, nothing billed.
A Firehose that hangs: its resends stop in time for the S3 fallback, still before the deadline.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import wiring
from chalicelib.aws_json import FIREHOSE, LeanJsonClient
from chalicelib.bedrock import ModelReply
from chalicelib.budgets.dynamo import DynamoBudgetStore
from chalicelib.conversation import Conversation
from chalicelib.deadlines import (
    ANSWER_MARGIN_S,
    FIREHOSE_TIMEOUTS,
    RECORD_RESERVE_S,
    S3_FALLBACK_TIMEOUTS,
)
from chalicelib.firehose import FirehoseWriter
from chalicelib.recorder import UsageRecorder
from chalicelib.usage import TokenUsage
from tests.functional.budgets.conftest import (
    PLANS_TABLE,
    BudgetEnv,
    admin_auth,
    budget_settings,
    chat,
)
from tests.functional.conftest import BUCKET, STREAM, stored_events
from tests.support.tokens import REGION


class SlowModel:
    """Answers only when released (or after `seconds`): a generation too long for the call."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.release = threading.Event()
        self.seconds = seconds
        self.calls = 0

    def converse(self, model_id: str, conversation: Conversation, max_tokens: int) -> ModelReply:
        self.calls += 1
        self.release.wait(self.seconds)
        return ModelReply("too late", TokenUsage(30, 500, total_tokens=530), "max_tokens")


@pytest.fixture
def slow_model(budget_env: BudgetEnv) -> Iterator[SlowModel]:
    model = SlowModel()
    yield model
    model.release.set()


def test_a_model_slower_than_the_deadline_is_504_with_an_aborted_unbilled_event(
    client: Client,
    budget_env: BudgetEnv,
    slow_model: SlowModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    deadline_s = 7  # the model gets 7 - 0.5 - 4.6 = 1.9 s
    wiring.override(
        settings=budget_settings(REQUEST_DEADLINE_S=str(deadline_s), BEDROCK_READ_TIMEOUT_S="5"),
        model=slow_model,
    )

    started = time.monotonic()
    response = chat(client, max_tokens=64)
    elapsed = time.monotonic() - started

    assert response.status_code == 504
    assert response.json_body["Code"] == "GatewayTimeoutError"
    assert "not billed" in response.json_body["Message"]
    assert elapsed < deadline_s - ANSWER_MARGIN_S
    assert elapsed >= deadline_s - ANSWER_MARGIN_S - RECORD_RESERVE_S - 0.5
    (event,) = stored_events()
    assert event["event_id"] == response.headers["X-Request-Id"]
    assert (event["status"], event["error_code"]) == ("aborted", "DeadlineExceeded")
    assert (event["total_tokens"], event["cost_usd"]) == (0, "0")
    month = DynamoBudgetStore(PLANS_TABLE).get_month("tenant-a", "2026-11")
    assert (month.settled_usd, month.reserved_usd, month.requests) == (0, 0, 0)
    assert month.open_reservations == 0
    assert month.aborted_requests == 1
    assert month.aborted_usd == Decimal("0.0000965")  # the worst case it had reserved
    view = client.http.get("/admin/tenants/tenant-a/plan", headers=admin_auth()).json_body
    assert view["aborted"] == {"requests": 1, "worst_case_usd": "0.0000965"}
    assert view["month_to_date"]["spent_usd"] == "0.00"

    # The model answers after all: what the provider pays for it goes to the log.
    logging.getLogger("chalicelib").addHandler(caplog.handler)
    try:
        slow_model.release.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not _late(caplog):
            time.sleep(0.05)
    finally:
        logging.getLogger("chalicelib").removeHandler(caplog.handler)
    (late,) = _late(caplog)
    assert late.event_id == event["event_id"]  # type: ignore[attr-defined]
    assert late.output_tokens == 500  # type: ignore[attr-defined]
    assert late.provider_cost_usd == "0.0006325"  # type: ignore[attr-defined]
    assert [e["status"] for e in stored_events()] == ["aborted"]  # still nothing billed


def _late(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "after the request's deadline" in r.getMessage()]


def test_no_model_call_starts_without_time_to_finish_it(
    client: Client, budget_env: BudgetEnv, slow_model: SlowModel
) -> None:
    wiring.override(
        settings=budget_settings(REQUEST_DEADLINE_S="5", BEDROCK_READ_TIMEOUT_S="5"),
        model=slow_model,
    )
    response = chat(client)
    assert response.status_code == 504
    assert slow_model.calls == 0
    assert [e["status"] for e in stored_events()] == ["aborted"]


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An endpoint that accepts connections and requests, and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_a_hanging_firehose_falls_back_to_s3_before_the_deadline(
    client: Client, budget_env: BudgetEnv, black_hole: str
) -> None:
    deadline_s = 8
    settings = budget_settings(REQUEST_DEADLINE_S=str(deadline_s), BEDROCK_READ_TIMEOUT_S="5")
    hanging = LeanJsonClient(
        FIREHOSE,
        endpoint_url=black_hole,
        region=REGION,
        credentials=boto3.session.Session().get_credentials(),
        connect_timeout_s=FIREHOSE_TIMEOUTS.connect_s,
        read_timeout_s=FIREHOSE_TIMEOUTS.read_s,
        max_attempts=1,
    )
    writer = FirehoseWriter(
        STREAM, client=hanging, max_attempts=10, attempt_s=FIREHOSE_TIMEOUTS.attempt_s
    )
    attempts: list[float] = []
    original = hanging.call

    def counted(operation: str, params: Any) -> Any:
        attempts.append(time.monotonic())
        return original(operation, params)

    hanging.call = counted  # type: ignore[method-assign]
    wiring.override(
        settings=settings,
        recorder=UsageRecorder(
            writer,
            bucket=BUCKET,
            fallback_prefix=settings.fallback_prefix,
            s3_client=boto3.client("s3", region_name=REGION),
            fallback_reserve_s=S3_FALLBACK_TIMEOUTS.worst_s,
        ),
    )
    budget_env.bedrock.reply("answered")

    started = time.monotonic()
    response = chat(client)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed < deadline_s - ANSWER_MARGIN_S
    # Resends stopped while the whole fallback still fit before the answer was due.
    assert 1 < len(attempts) < 10
    assert attempts[-1] - started + FIREHOSE_TIMEOUTS.attempt_s <= (
        deadline_s - ANSWER_MARGIN_S - S3_FALLBACK_TIMEOUTS.worst_s
    )
    assert stored_events("raw/") == []
    (event,) = stored_events("fallback/")
    assert (event["event_id"], event["status"]) == (response.headers["X-Request-Id"], "ok")
    month = DynamoBudgetStore(PLANS_TABLE).get_month("tenant-a", "2026-11")
    assert month.settled_usd == Decimal(event["cost_usd"])
