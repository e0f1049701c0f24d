"""POST /bedrock/chat: validate, reserve budget, call the model, record, settle."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from chalicelib.bedrock import ModelReply
from chalicelib.bodies import parse_json_body
from chalicelib.errors import (
    BudgetStoreUnavailableError,
    ForbiddenError,
    InvalidRequestError,
    ModelError,
    RateLimitedError,
)
from chalicelib.identity import Caller
from chalicelib.pricing import Cost, PriceTable
from chalicelib.usage import NO_TOKENS, Status, TokenUsage, UsageEvent, new_event_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatLimits:
    """Bounds on what a caller may ask for."""

    max_prompt_chars: int
    default_max_tokens: int
    max_tokens_limit: int


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request."""

    prompt: str
    max_tokens: int


@dataclass(frozen=True)
class _Call:
    """One chat call in progress: what its usage event will say about it."""

    event_id: str
    timestamp: datetime
    started: float
    caller: Caller
    request_id: str


@dataclass(frozen=True)
class ChatResult:
    """What the caller gets back, and the id of the usage event that bills it."""

    text: str
    event_id: str


class Model(Protocol):
    """The model port (chalicelib.bedrock.BedrockModel in production)."""

    def converse(self, model_id: str, prompt: str, max_tokens: int) -> ModelReply: ...


class Recorder(Protocol):
    """The usage port (chalicelib.recorder.UsageRecorder in production)."""

    def record(self, event: UsageEvent) -> str: ...


class Budget(Protocol):
    """The budget port (chalicelib.budgets.service.BudgetService in production).

    `reserve` returns an opaque hold, or raises a refusal before the model is called;
    `settle` and `release` never raise.
    """

    def reserve(
        self,
        *,
        tenant_id: str,
        model_id: str,
        prompt: str,
        max_tokens: int,
        event_id: str,
        timestamp: datetime,
    ) -> Any: ...

    def settle(self, hold: Any, tokens: TokenUsage, cost_usd: Decimal) -> None: ...

    def release(self, hold: Any) -> None: ...


# Refusals from the budget: the model is not called, a `rejected` event records why.
BUDGET_REFUSALS = (
    RateLimitedError,
    ForbiddenError,
    InvalidRequestError,
    BudgetStoreUnavailableError,
)


def parse_chat_request(raw_body: bytes | str | None, limits: ChatLimits) -> ChatRequest:
    """Validate the request body; raise InvalidRequestError naming the problem.

    Fields other than `prompt` and `max_tokens` (a `tenant_id`, say) are ignored.
    """
    body = parse_json_body(
        raw_body, required="Request body is required: a JSON object with a 'prompt'."
    )
    if not isinstance(body, dict):
        raise InvalidRequestError("Request body must be a JSON object.")
    if "prompt" not in body:
        raise InvalidRequestError("'prompt' is required.")
    prompt = body["prompt"]
    if not isinstance(prompt, str):
        raise InvalidRequestError("'prompt' must be a string.")
    if not prompt.strip():
        raise InvalidRequestError("'prompt' must not be empty.")
    if len(prompt) > limits.max_prompt_chars:
        raise InvalidRequestError(
            f"'prompt' is too long: at most {limits.max_prompt_chars} characters."
        )
    max_tokens = body.get("max_tokens", limits.default_max_tokens)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidRequestError("'max_tokens' must be an integer.")
    if not 1 <= max_tokens <= limits.max_tokens_limit:
        raise InvalidRequestError(f"'max_tokens' must be between 1 and {limits.max_tokens_limit}.")
    return ChatRequest(prompt=prompt, max_tokens=max_tokens)


class ChatService:
    """Runs one chat call and meters it."""

    def __init__(
        self,
        *,
        model: Model,
        recorder: Recorder,
        prices: PriceTable,
        model_id: str,
        stage: str,
        budget: Budget | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._model = model
        self._recorder = recorder
        self._budget = budget
        self._prices = prices
        self._model_id = model_id
        self._stage = stage
        self._now = now
        self._clock = clock

    def chat(self, caller: Caller, request: ChatRequest, request_id: str) -> ChatResult:
        """Reserve the worst case, call the model, record the usage event, settle.

        A budget refusal is recorded (status `rejected`, best effort) and re-raised: the
        model is not called. A model failure is recorded (status `error`), its reservation
        released, and re-raised with `event_id` attached. If the event cannot be made
        durable, the reservation is released and UsageNotDurableError propagates: no answer
        is returned for usage that was not recorded. The settle comes after the event is
        durable and never fails the request (the repair job finishes a failed settle).
        """
        call = _Call(new_event_id(), self._now(), self._clock(), caller, request_id)
        hold = self._reserve(call, request)
        try:
            reply = self._model.converse(self._model_id, request.prompt, request.max_tokens)
        except ModelError as exc:
            exc.event_id = call.event_id
            self._record_failure(self._event(call, NO_TOKENS, "error", exc.error_code))
            self._release(hold)
            raise
        cost = self._prices.cost(self._model_id, reply.usage)
        event = self._event(call, reply.usage, "ok", None, cost)
        try:
            self._recorder.record(event)
        except Exception:
            self._release(hold)  # not recorded, so not billed
            raise
        if self._budget is not None and hold is not None:
            self._budget.settle(hold, reply.usage, cost.usd)
        return ChatResult(text=reply.text, event_id=call.event_id)

    def _reserve(self, call: _Call, request: ChatRequest) -> Any:
        if self._budget is None:
            return None
        try:
            return self._budget.reserve(
                tenant_id=call.caller.tenant_id,
                model_id=self._model_id,
                prompt=request.prompt,
                max_tokens=request.max_tokens,
                event_id=call.event_id,
                timestamp=call.timestamp,
            )
        except BUDGET_REFUSALS as exc:
            code = str(getattr(exc, "error_code", type(exc).__name__))
            if self._record_failure(self._event(call, NO_TOKENS, "rejected", code)):
                exc.event_id = call.event_id
            raise

    def _release(self, hold: Any) -> None:
        if self._budget is not None and hold is not None:
            self._budget.release(hold)

    def _event(
        self,
        call: _Call,
        tokens: TokenUsage,
        status: Status,
        error_code: str | None,
        cost: Cost | None = None,
    ) -> UsageEvent:
        cost = cost or self._prices.cost(self._model_id, tokens)
        return UsageEvent(
            event_id=call.event_id,
            timestamp=call.timestamp,
            tenant_id=call.caller.tenant_id,
            user_id=call.caller.user_id,
            model_id=self._model_id,
            tokens=tokens,
            status=status,
            error_code=error_code,
            latency_ms=int((self._clock() - call.started) * 1000),
            cost_usd=cost.usd_text,
            price_version=cost.price_version,
            request_id=call.request_id,
            stage=self._stage,
        )

    def _record_failure(self, event: UsageEvent) -> bool:
        # A failed or refused call bills nothing; if even its event cannot be stored, the
        # caller still gets the model error or refusal (not a 503), and the full event is in
        # the log.
        try:
            self._recorder.record(event)
        except Exception:
            logger.exception(
                "failed-call usage event not recorded", extra={"usage_event": event.to_record()}
            )
            return False
        return True
