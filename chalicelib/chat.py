"""POST /bedrock/chat: validate, call the model, record exactly one durable usage event."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from chalicelib.bedrock import ModelReply
from chalicelib.errors import InvalidRequestError, ModelError
from chalicelib.identity import Caller
from chalicelib.pricing import PriceTable
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


def parse_chat_request(raw_body: bytes | str | None, limits: ChatLimits) -> ChatRequest:
    """Validate the request body; raise InvalidRequestError naming the problem.

    Fields other than `prompt` and `max_tokens` (a `tenant_id`, say) are ignored.
    """
    if not raw_body:
        raise InvalidRequestError("Request body is required: a JSON object with a 'prompt'.")
    try:
        body = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError("Request body is not valid JSON.") from None
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
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._model = model
        self._recorder = recorder
        self._prices = prices
        self._model_id = model_id
        self._stage = stage
        self._now = now
        self._clock = clock

    def chat(self, caller: Caller, request: ChatRequest, request_id: str) -> ChatResult:
        """Call the model and record the usage event before returning.

        A model failure is recorded (status `error`) and re-raised with `event_id` attached.
        If the event cannot be made durable, UsageNotDurableError propagates: no answer
        is returned for usage that was not recorded.
        """
        event_id = new_event_id()
        timestamp = self._now()
        started = self._clock()
        try:
            reply = self._model.converse(self._model_id, request.prompt, request.max_tokens)
        except ModelError as exc:
            exc.event_id = event_id
            failed = self._event(
                event_id=event_id,
                timestamp=timestamp,
                caller=caller,
                tokens=NO_TOKENS,
                status="error",
                error_code=exc.error_code,
                started=started,
                request_id=request_id,
            )
            self._record_failure(failed)
            raise
        event = self._event(
            event_id=event_id,
            timestamp=timestamp,
            caller=caller,
            tokens=reply.usage,
            status="ok",
            error_code=None,
            started=started,
            request_id=request_id,
        )
        self._recorder.record(event)
        return ChatResult(text=reply.text, event_id=event_id)

    def _event(
        self,
        *,
        event_id: str,
        timestamp: datetime,
        caller: Caller,
        tokens: TokenUsage,
        status: Status,
        error_code: str | None,
        started: float,
        request_id: str,
    ) -> UsageEvent:
        cost = self._prices.cost(self._model_id, tokens)
        return UsageEvent(
            event_id=event_id,
            timestamp=timestamp,
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            model_id=self._model_id,
            tokens=tokens,
            status=status,
            error_code=error_code,
            latency_ms=int((self._clock() - started) * 1000),
            cost_usd=cost.usd_text,
            price_version=cost.price_version,
            request_id=request_id,
            stage=self._stage,
        )

    def _record_failure(self, event: UsageEvent) -> None:
        # A failed call bills nothing; if even its event cannot be stored, the caller still
        # gets the model error (not a 503), and the full event is in the log.
        try:
            self._recorder.record(event)
        except Exception:
            logger.exception(
                "failed-call usage event not recorded", extra={"usage_event": event.to_record()}
            )
