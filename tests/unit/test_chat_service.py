"""The chat use case over in-memory fakes: where the model runs, and calls given up in time."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.bedrock import ModelReply
from chalicelib.chat import ChatRequest, ChatService
from chalicelib.deadlines import Deadline
from chalicelib.errors import DeadlineExceededError, ModelUnavailableError
from chalicelib.identity import Caller
from chalicelib.pricing import load_price_table
from chalicelib.settings import DEFAULT_MODEL_ID
from chalicelib.usage import TokenUsage, UsageEvent

CALLER = Caller("t", "u", "u", frozenset())
REQUEST = ChatRequest("hi", 64)


class ThreadModel:
    def __init__(self, error: Exception | None = None) -> None:
        self.threads: list[str] = []
        self.error = error

    def converse(self, model_id: str, prompt: str, max_tokens: int) -> ModelReply:
        self.threads.append(threading.current_thread().name)
        if self.error is not None:
            raise self.error
        return ModelReply("ok", TokenUsage(1, 1, total_tokens=2), "end_turn")


class ListRecorder:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent, *, deadline: float | None = None) -> str:
        self.events.append(event)
        return "firehose"


def service(model: Any, recorder: ListRecorder, model_timeout_s: float) -> ChatService:
    return ChatService(
        model=model,
        recorder=recorder,
        prices=load_price_table(),
        model_id=DEFAULT_MODEL_ID,
        stage="test",
        model_executor=ThreadPoolExecutor(1, thread_name_prefix="model"),
        model_timeout_s=model_timeout_s,
    )


@pytest.mark.parametrize(
    ("model_timeout_s", "runs_in"),
    [(5.0, "MainThread"), (60.0, "model")],
    ids=["timeouts-fit-inline", "timeouts-too-long-worker"],
)
def test_the_model_runs_inline_only_when_its_client_timeouts_end_it_in_time(
    model_timeout_s: float, runs_in: str
) -> None:
    model = ThreadModel()
    service(model, ListRecorder(), model_timeout_s).chat(
        CALLER, REQUEST, "r", deadline=Deadline.start(29)
    )
    (thread,) = model.threads
    assert thread.startswith(runs_in)


def test_a_read_timeout_is_an_aborted_call_not_a_model_error() -> None:
    recorder = ListRecorder()
    model = ThreadModel(ModelUnavailableError("timed out", "ReadTimeoutError"))
    with pytest.raises(DeadlineExceededError) as aborted:
        service(model, recorder, 5.0).chat(CALLER, REQUEST, "r", deadline=Deadline.start(29))
    (event,) = recorder.events
    assert (event.status, event.error_code) == ("aborted", "DeadlineExceeded")
    assert aborted.value.event_id == event.event_id
