"""The chat use case over in-memory fakes: where the model runs, calls given up in time, and
which model a call goes to."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.bedrock import ModelReply
from chalicelib.chat import ChatRequest, ChatService
from chalicelib.conversation import Conversation, Message
from chalicelib.deadlines import Deadline
from chalicelib.errors import (
    DeadlineExceededError,
    ModelNotAllowedError,
    ModelNotPricedError,
    ModelUnavailableError,
)
from chalicelib.identity import Caller
from chalicelib.pricing import load_price_table
from chalicelib.settings import DEFAULT_MODEL_ID
from chalicelib.usage import TokenUsage, UsageEvent

CALLER = Caller("t", "u", "u", frozenset())
REQUEST = ChatRequest.from_prompt("hi", 64)


class ThreadModel:
    def __init__(self, error: Exception | None = None) -> None:
        self.threads: list[str] = []
        self.calls: list[tuple[str, Conversation, int]] = []
        self.error = error

    def converse(self, model_id: str, conversation: Conversation, max_tokens: int) -> ModelReply:
        self.threads.append(threading.current_thread().name)
        self.calls.append((model_id, conversation, max_tokens))
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


def test_without_budgets_the_stages_model_answers_the_conversation_as_sent() -> None:
    recorder, model = ListRecorder(), ThreadModel()
    conversation = Conversation(
        (Message("user", "Hi."), Message("assistant", "Hello."), Message("user", "Bye.")),
        "Be kind.",
    )
    request = ChatRequest(conversation, model_id=DEFAULT_MODEL_ID)

    service(model, recorder, 5.0).chat(CALLER, request, "r")

    (call,) = model.calls
    assert call == (DEFAULT_MODEL_ID, conversation, 1664)  # no max_tokens: the model's cap
    (event,) = recorder.events
    assert (event.model_id, event.cost_usd) == (DEFAULT_MODEL_ID, "0.0000015")


@pytest.mark.parametrize(
    ("model_id", "error", "code"),
    [
        ("acme.mystery-model-v1:0", ModelNotPricedError, "ModelNotPriced"),
        ("amazon.nova-micro-v1:0", ModelNotAllowedError, "ModelNotAllowed"),
    ],
)
def test_without_budgets_another_model_is_refused_and_recorded_never_called(
    model_id: str, error: type[Exception], code: str
) -> None:
    recorder, model = ListRecorder(), ThreadModel()
    with pytest.raises(error) as refused:
        service(model, recorder, 5.0).chat(
            CALLER, ChatRequest.from_prompt("hi", model_id=model_id), "r"
        )
    assert model.calls == []
    (event,) = recorder.events
    assert (event.status, event.error_code, event.model_id) == ("rejected", code, model_id)
    assert (event.cost_usd, event.price_version) == ("0", load_price_table().version)
    assert refused.value.event_id == event.event_id  # type: ignore[attr-defined]
