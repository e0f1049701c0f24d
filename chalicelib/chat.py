"""POST /bedrock/chat: validate, claim the key, reserve, call the model in time, record, settle.

The critical path with budgets on, in AWS round trips besides the model call:

    [claim Idempotency-Key]  ->  reserve  ->  model  ->  durable event  }  concurrently
         (only with a key)      (1 write)               settle         }  (1 round trip)
                                                        store answer   }

The plan comes from the container's cache, the month index is written off the path, and the
settle (and the stored answer) run beside the durable write. The answer is returned only once
the event is durable; if it cannot be made durable, what ran beside it is undone (the settle
compensated, the answer withdrawn) and the caller gets 503 with nothing billed.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn, Protocol, TypeVar

from chalicelib.bedrock import ModelReply
from chalicelib.bodies import parse_json_body
from chalicelib.conversation import ROLES, Conversation, Message
from chalicelib.deadlines import (
    API_GATEWAY_TIMEOUT_S,
    MIN_MODEL_WINDOW_S,
    MODEL_RETRY_MIN_WINDOW_S,
    Deadline,
    MaxTokensPolicy,
)
from chalicelib.errors import (
    BudgetStoreUnavailableError,
    DeadlineExceededError,
    ForbiddenError,
    IdempotencyConflictError,
    IdempotencyKeyReusedError,
    IdempotencyStoreUnavailableError,
    InvalidRequestError,
    MeteringError,
    ModelError,
    ModelNotAllowedError,
    ModelNotPricedError,
    RateLimitedError,
)
from chalicelib.idempotency import (
    Answer,
    Claimed,
    IdempotencyStore,
    InFlight,
    KeyRecord,
    Mismatch,
    Replay,
    new_record,
)
from chalicelib.identity import Caller
from chalicelib.pricing import Cost, PriceTable, UnknownModelError
from chalicelib.usage import NO_TOKENS, Status, TokenUsage, UsageEvent, new_event_id

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Model failures worth one more attempt, when there is time for it: the service or the
# connection failed before the model ran. Throttling is answered 429 at once instead.
RETRYABLE_MODEL_CODES = frozenset(
    {
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelNotReadyException",
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ConnectionClosedError",
    }
)
MODEL_RETRY_BACKOFF_S = 0.2
# The client's read timeout ran out: the call is given up like one past its deadline.
TIMED_OUT_CODES = frozenset({"ReadTimeoutError"})
ABORTED_MESSAGE = (
    "The model did not answer in time, so the request was stopped and not billed. "
    "Retry, with a smaller max_tokens if it keeps happening."
)
# Without a stage's max_tokens policy (tests, scripts), only each model's own cap applies.
MODEL_CAPS_ONLY = MaxTokensPolicy(default=2**31, limit=2**31, deadline_s=API_GATEWAY_TIMEOUT_S)


@dataclass(frozen=True)
class ChatLimits:
    """Bounds on what a caller may send: the stage's (each model caps max_tokens further)."""

    max_prompt_chars: int  # characters across the prompt or messages and the system text
    max_tokens_limit: int  # the stage's bound (MAX_TOKENS_LIMIT)
    max_messages: int = 100


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request."""

    conversation: Conversation
    max_tokens: int | None = None  # None: the chosen model's default
    model_id: str | None = None  # as the caller named it; None: the stage's model

    @classmethod
    def from_prompt(
        cls, prompt: str, max_tokens: int | None = None, *, model_id: str | None = None
    ) -> ChatRequest:
        """A one-prompt request."""
        return cls(Conversation.from_prompt(prompt), max_tokens, model_id)


@dataclass(frozen=True)
class KeyUse:
    """An Idempotency-Key as the request carried it: its digest and the body's fingerprint."""

    key_digest: str
    fingerprint: str


@dataclass(frozen=True)
class ChatResult:
    """The answer: HTTP status, exact JSON body, and X-Request-Id (the billing event's id)."""

    status: int
    body: str
    event_id: str
    replayed: bool = False


@dataclass(frozen=True)
class _Call:
    """One chat call in progress: what its usage event will say about it, and its deadline."""

    event_id: str
    timestamp: datetime
    started: float
    caller: Caller
    request_id: str
    deadline: Deadline
    model_id: str  # the model called (or refused): as the request named it, else the stage's


class Model(Protocol):
    """The model port (chalicelib.bedrock.BedrockModel in production)."""

    def converse(
        self, model_id: str, conversation: Conversation, max_tokens: int
    ) -> ModelReply: ...


class Recorder(Protocol):
    """The usage port (chalicelib.recorder.UsageRecorder in production)."""

    def record(self, event: UsageEvent, *, deadline: float | None = None) -> str: ...


class Refusals(Protocol):
    """Refusal accounting (chalicelib.refusals.RefusalAccounting): the event id that stands
    for a refused request, or None if it could not be recorded."""

    def record(self, event: UsageEvent, *, deadline: float | None = None) -> str | None: ...


class Budget(Protocol):
    """The budget port (chalicelib.budgets.service.BudgetService in production).

    `reserve` returns an opaque hold, or raises a refusal before the model is called;
    `settle` returns an opaque result (None if its outcome is unknown); `settle`, `release`
    and `compensate` never raise.
    """

    def reserve(
        self,
        *,
        tenant_id: str,
        model_id: str,
        conversation: Conversation,
        max_tokens: int,
        event_id: str,
        timestamp: datetime,
    ) -> Any: ...

    def settle(self, hold: Any, tokens: TokenUsage, cost_usd: Decimal) -> Any: ...

    def release(self, hold: Any, *, aborted: bool = False) -> None: ...

    def compensate(
        self, hold: Any, settled: Any, tokens: TokenUsage, cost_usd: Decimal
    ) -> None: ...


class CallMetrics(Protocol):
    """The live-metrics port (chalicelib.metrics.EmfCallMetrics in production): told of each
    call once its usage event is durable; never raises."""

    def observe(self, event: UsageEvent) -> None: ...


# Refusals: the model is not called, a `rejected` event records why.
BUDGET_REFUSALS = (
    RateLimitedError,
    ForbiddenError,
    InvalidRequestError,
    BudgetStoreUnavailableError,
)


def parse_chat_request(raw_body: bytes | str | None, limits: ChatLimits) -> ChatRequest:
    """Validate the request body; raise InvalidRequestError naming the field at fault.

    The body holds exactly one of `prompt` (a string) or `messages` (a conversation), and
    optionally `system`, `max_tokens` and `model`. Other fields (a `tenant_id`, say) are
    ignored. Whether the model is priced and allowed, and its own max_tokens cap, are checked
    by the chat service, which records a refusal.
    """
    body = parse_json_body(
        raw_body,
        required="Request body is required: a JSON object with a 'prompt' or 'messages'.",
    )
    if not isinstance(body, dict):
        raise InvalidRequestError("Request body must be a JSON object.")
    if "prompt" in body and "messages" in body:
        raise InvalidRequestError("Send either 'prompt' or 'messages', not both.")
    system = _system(body)
    messages: tuple[Message, ...]
    if "prompt" in body:
        messages = (Message("user", _text(body["prompt"], "'prompt'")),)
    elif "messages" in body:
        messages = _messages(body["messages"], limits.max_messages)
    else:
        raise InvalidRequestError("'prompt' or 'messages' is required.")
    conversation = Conversation(messages, system)
    if conversation.chars > limits.max_prompt_chars:
        fields = "'prompt'" if "prompt" in body else "'messages'"
        if system is not None:
            fields += " and 'system'"
        raise InvalidRequestError(
            f"{fields} too long: at most {limits.max_prompt_chars} characters in all."
        )
    return ChatRequest(conversation, _max_tokens(body, limits), _model(body))


# What a `model` may look like: Bedrock model ids, inference profile ids and ARNs use only
# these characters. Anything else is malformed input (400, no usage event); a well-formed id
# the price table does not know is refused by the chat service and recorded.
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,255}")
_MESSAGE_FIELDS = frozenset({"role", "content"})


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string.")
    if not value.strip():
        raise InvalidRequestError(f"{name} must not be empty.")
    return value


def _system(body: dict[str, Any]) -> str | None:
    return _text(body["system"], "'system'") if "system" in body else None


def _messages(value: object, max_messages: int) -> tuple[Message, ...]:
    """A conversation as Converse takes it: user and assistant in turn, first and last the
    user's (the model answers the last message)."""
    if not isinstance(value, list) or not value:
        raise InvalidRequestError(
            '\'messages\' must be a non-empty list of {"role", "content"} objects.'
        )
    if len(value) > max_messages:
        raise InvalidRequestError(f"'messages' has too many messages: at most {max_messages}.")
    messages = []
    for index, item in enumerate(value):
        where = f"'messages[{index}]'"
        if not isinstance(item, dict) or not item.keys() >= _MESSAGE_FIELDS:
            raise InvalidRequestError(f"{where} must be an object with 'role' and 'content'.")
        if item.keys() - _MESSAGE_FIELDS:
            raise InvalidRequestError(
                f"{where} has an unknown field; a message has only 'role' and 'content'."
            )
        role = item["role"]
        if role not in ROLES:
            raise InvalidRequestError(f"{where}.role must be 'user' or 'assistant'.")
        expected = ROLES[index % 2]
        if role != expected:
            raise InvalidRequestError(
                f"{where}.role must be '{expected}': messages alternate between 'user' and "
                "'assistant', starting with 'user'."
            )
        messages.append(Message(role, _text(item["content"], f"{where}.content")))
    if messages[-1].role != "user":
        raise InvalidRequestError(
            "'messages' must end with a 'user' message: the model answers the last message."
        )
    return tuple(messages)


def _max_tokens(body: dict[str, Any], limits: ChatLimits) -> int | None:
    if "max_tokens" not in body:
        return None
    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidRequestError("'max_tokens' must be an integer.")
    if not 1 <= max_tokens <= limits.max_tokens_limit:
        raise InvalidRequestError(f"'max_tokens' must be between 1 and {limits.max_tokens_limit}.")
    return max_tokens


def _model(body: dict[str, Any]) -> str | None:
    if "model" not in body:
        return None
    model = body["model"]
    if not isinstance(model, str) or not _MODEL_ID.fullmatch(model):
        raise InvalidRequestError(
            "'model' must be a Bedrock model id, inference profile id or ARN: up to 256 "
            "letters, digits and '.', '_', ':', '/', '-'."
        )
    return model


def answer_body(text: str) -> str:
    """The 200 answer's JSON body."""
    return json.dumps({"response": text})


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
        max_tokens: MaxTokensPolicy = MODEL_CAPS_ONLY,
        budget: Budget | None = None,
        metrics: CallMetrics | None = None,
        refusals: Refusals | None = None,
        keys: IdempotencyStore | None = None,
        model_executor: Executor | None = None,
        model_timeout_s: float | None = None,
        io_executor: Executor | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._model = model
        self._recorder = recorder
        self._budget = budget
        self._metrics = metrics
        self._refusals = refusals
        self._keys = keys
        self._prices = prices
        # The stage's model: called when a request names none. With budgets the plan says
        # which other models a tenant may call; without, only this one.
        self._model_id = model_id
        self._max_tokens = max_tokens
        self._stage = stage
        # The model call runs here when the client's own timeouts (`model_timeout_s`, the
        # longest one call can take) could let it run past the model deadline: the request
        # then stops waiting at the deadline. Otherwise, and without an executor, it runs
        # inline, ended in time by those timeouts (and saving a thread hand-off).
        self._model_executor = model_executor
        self._model_timeout_s = model_timeout_s
        # Writes that run beside the durable write (settle, stored answer, month index).
        self._io_executor = io_executor
        self._now = now
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep

    def chat(
        self,
        caller: Caller,
        request: ChatRequest,
        request_id: str,
        *,
        deadline: Deadline | None = None,
        key: KeyUse | None = None,
    ) -> ChatResult:
        """Run the call to the request's model (else the stage's) and meter it; the answer,
        or a domain error for the edge to map.

        A refusal (a model that is not priced or that the caller may not use, over budget or
        rate) is counted (its event, or its minute's aggregate) and re-raised: the model is
        not called. A model failure is recorded (`error`), its reservation released. A
        call the model cannot finish before the deadline is recorded `aborted` and raises
        DeadlineExceededError (504). If the event cannot be made durable, UsageNotDurableError
        propagates and the counters are left as if the call never happened. Each of these
        errors carries the id of the event that recorded it, if there is one. With a `key`, a
        completed earlier call with the same key and body is answered again as it was.
        """
        deadline = deadline or Deadline.start(API_GATEWAY_TIMEOUT_S, clock=self._clock)
        call = _Call(
            new_event_id(),
            self._now(),
            self._clock(),
            caller,
            request_id,
            deadline,
            request.model_id or self._model_id,
        )
        claim = self._claim(call, key)
        if isinstance(claim, Answer):
            return ChatResult(claim.status, claim.body, claim.request_id, replayed=True)
        try:
            max_tokens = self._max_tokens_for(call, request)
            hold = self._reserve(call, request.conversation, max_tokens)
            reply = self._converse(call, request.conversation, max_tokens, hold)
        except BaseException:
            self._abandon(claim)  # refusals and errors are not answers to replay
            raise
        return self._finish(call, hold, reply, claim)

    # -- the model and its max_tokens ----------------------------------------------------------

    def _max_tokens_for(self, call: _Call, request: ChatRequest) -> int:
        """The call's max_tokens, within its model's cap. A model the price table does not
        know is refused here (400, recorded): it could be neither reserved for nor billed."""
        try:
            base_model = self._prices.base_model_of(call.model_id)
        except UnknownModelError:
            self._refuse(
                call,
                ModelNotPricedError(
                    f"Unknown model {call.model_id!r}: there is no price for it in price table "
                    f"{self._prices.version}, so its calls cannot be metered. Leave 'model' "
                    f"out to use the default model, {self._model_id}."
                ),
            )
        limit = self._max_tokens.limit_for(base_model)
        if request.max_tokens is None:
            return self._max_tokens.default_for(base_model)
        if request.max_tokens > limit:
            raise InvalidRequestError(
                f"'max_tokens' must be between 1 and {limit} for the model {call.model_id}."
            )
        return request.max_tokens

    def _refuse(self, call: _Call, error: MeteringError) -> NoReturn:
        """Record the refusal (a `rejected` event, or its minute's aggregate) and raise it:
        the model is not called."""
        code = str(getattr(error, "error_code", type(error).__name__))
        event = self._event(call, NO_TOKENS, "rejected", code)
        if self._refusals is not None:
            error.event_id = self._refusals.record(event, deadline=call.deadline.answer_by)
            if error.event_id == event.event_id:  # recorded on its own, not in an aggregate
                self._observe(event)
        elif self._record_failure(event, call):
            error.event_id = call.event_id
        raise error

    # -- idempotency -------------------------------------------------------------------------

    def _claim(self, call: _Call, key: KeyUse | None) -> KeyRecord | Answer | None:
        if key is None:
            return None
        if self._keys is None:
            raise IdempotencyStoreUnavailableError(
                "Idempotency keys are not available on this stage."
            )
        now = self._wall_clock()
        record = new_record(
            call.caller.tenant_id,
            key.key_digest,
            key.fingerprint,
            lease=call.event_id,
            lease_until=call.deadline.wall_time(self._wall_clock),
            now=now,
        )
        outcome = self._keys.claim(record, now)
        if isinstance(outcome, Claimed):
            return outcome.record
        if isinstance(outcome, Replay):
            return outcome.answer
        if isinstance(outcome, InFlight):
            raise IdempotencyConflictError(
                "A request with this Idempotency-Key is still being processed; retry after "
                f"{outcome.retry_after_s} s to get its answer.",
                outcome.retry_after_s,
            )
        assert isinstance(outcome, Mismatch)
        raise IdempotencyKeyReusedError(
            "This Idempotency-Key was already used with a different request body; "
            "use a new key for a new request."
        )

    def _abandon(self, claim: KeyRecord | Answer | None) -> None:
        if not isinstance(claim, KeyRecord) or self._keys is None:
            return
        try:
            self._keys.abandon(claim)
        except IdempotencyStoreUnavailableError:
            # The key stays in flight until its lease ends; then a retry takes it over.
            logger.warning("idempotency key not released", extra={"lease": claim.lease})

    # -- budget ------------------------------------------------------------------------------

    def _reserve(self, call: _Call, conversation: Conversation, max_tokens: int) -> Any:
        """The budget's hold on the call's worst case (None without budgets), or a refusal:
        over budget or rate, or a model the caller may not use."""
        try:
            if self._budget is None:
                if call.model_id != self._model_id:
                    raise ModelNotAllowedError(
                        f"The model {call.model_id} is not available here: this service "
                        f"offers only its default model, {self._model_id} (leave 'model' out "
                        "to use it)."
                    )
                return None
            return self._budget.reserve(
                tenant_id=call.caller.tenant_id,
                model_id=call.model_id,
                conversation=conversation,
                max_tokens=max_tokens,
                event_id=call.event_id,
                timestamp=call.timestamp,
            )
        except BUDGET_REFUSALS as exc:
            self._refuse(call, exc)

    def _release(self, hold: Any, *, aborted: bool = False) -> None:
        if self._budget is not None and hold is not None:
            self._budget.release(hold, aborted=aborted)

    # -- the model, within the deadline --------------------------------------------------------

    def _converse(
        self, call: _Call, conversation: Conversation, max_tokens: int, hold: Any
    ) -> ModelReply:
        attempt = 0
        while True:
            window = call.deadline.seconds_until(call.deadline.model_by)
            if window < MIN_MODEL_WINDOW_S:
                self._abort(call, hold)
            try:
                return self._converse_once(call, conversation, max_tokens, window, hold)
            except ModelError as exc:
                if exc.error_code in TIMED_OUT_CODES:
                    self._abort(call, hold)  # the model may still be generating: not an error
                left = call.deadline.seconds_until(call.deadline.model_by)
                if (
                    attempt == 0
                    and exc.error_code in RETRYABLE_MODEL_CODES
                    and left >= MODEL_RETRY_MIN_WINDOW_S
                ):
                    attempt += 1
                    self._sleep(random.random() * MODEL_RETRY_BACKOFF_S)  # noqa: S311
                    continue
                exc.event_id = call.event_id
                self._record_failure(self._event(call, NO_TOKENS, "error", exc.error_code), call)
                self._release(hold)
                raise

    def _converse_once(
        self,
        call: _Call,
        conversation: Conversation,
        max_tokens: int,
        window: float,
        hold: Any,
    ) -> ModelReply:
        inline = self._model_timeout_s is not None and self._model_timeout_s <= window
        if self._model_executor is None or inline:
            return self._model.converse(call.model_id, conversation, max_tokens)
        future = self._model_executor.submit(
            self._model.converse, call.model_id, conversation, max_tokens
        )
        try:
            return future.result(timeout=window)
        except FutureTimeout:
            if future.cancel():
                logger.warning("model call never started: no worker free in time")
            else:
                future.add_done_callback(self._late_reply_logger(call))
            self._abort(call, hold)

    def _abort(self, call: _Call, hold: Any) -> NoReturn:
        """Give the call up: an `aborted` event, the reservation released (its worst case
        counted as the provider's exposure), 504."""
        error = DeadlineExceededError(ABORTED_MESSAGE)
        event = self._event(call, NO_TOKENS, "aborted", DeadlineExceededError.error_code)
        if self._record_failure(event, call):
            error.event_id = call.event_id
        self._release(hold, aborted=True)
        raise error

    def _late_reply_logger(self, call: _Call) -> Callable[[Future[ModelReply]], None]:
        """Logs what a call given up at its deadline really used, if the model answers after
        all: the provider pays Bedrock for it though the tenant was not billed."""

        def log(future: Future[ModelReply]) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            reply = future.result()
            cost = self._prices.cost(call.model_id, reply.usage)
            logger.warning(
                "model answered after the request's deadline (aborted, not billed)",
                extra={
                    "event_id": call.event_id,
                    "tenant_id": call.caller.tenant_id,
                    "provider_cost_usd": cost.usd_text,
                    "price_version": cost.price_version,
                    **reply.usage.as_dict(),
                },
            )

        return log

    # -- after the model: durable event, settle and answer, concurrently -------------------

    def _finish(self, call: _Call, hold: Any, reply: ModelReply, claim: Any) -> ChatResult:
        cost = self._prices.cost(call.model_id, reply.usage)
        event = self._event(call, reply.usage, "ok", None, cost)
        answer = Answer(200, answer_body(reply.text), call.event_id)
        settling = None
        if self._budget is not None and hold is not None:
            settling = self._beside(self._budget.settle, hold, reply.usage, cost.usd)
        storing = None
        if isinstance(claim, KeyRecord) and self._keys is not None:
            storing = self._beside(self._keys.complete, claim, answer)
        try:
            self._record(event, call)
        except BaseException:
            # Not recorded, so not billed: undo what ran beside the write.
            if settling is not None and self._budget is not None:
                settled = self._wait(settling, call)
                self._budget.compensate(hold, settled, reply.usage, cost.usd)
            if storing is not None:
                self._wait(storing, call)
            self._abandon(claim)
            raise
        if settling is not None:
            self._wait(settling, call)
        if storing is not None:
            self._wait(storing, call)
        return ChatResult(answer.status, answer.body, call.event_id)

    def _beside(self, function: Callable[..., T], *args: Any) -> Future[T]:
        """Run `function` beside the durable write (inline without an executor)."""
        if self._io_executor is not None:
            return self._io_executor.submit(function, *args)
        future: Future[T] = Future()
        try:
            future.set_result(function(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def _wait(self, future: Future[T], call: _Call) -> T | None:
        """The result, or None if it failed or is not done by the time the answer is due (it
        then finishes, or not, on its own: settles and answers are exactly-once writes)."""
        timeout = max(0.0, call.deadline.seconds_until(call.deadline.answer_by))
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            logger.warning("write beside the usage event not finished in time")
        except Exception as exc:
            logger.warning(
                "write beside the usage event failed", extra={"error": type(exc).__name__}
            )
        return None

    # -- events ------------------------------------------------------------------------------

    def _event(
        self,
        call: _Call,
        tokens: TokenUsage,
        status: Status,
        error_code: str | None,
        cost: Cost | None = None,
    ) -> UsageEvent:
        # Without a cost, the call used no tokens (refused, failed, aborted): nothing to price,
        # and a refused model may have no price at all.
        cost = cost or Cost(Decimal(0), self._prices.version)
        return UsageEvent(
            event_id=call.event_id,
            timestamp=call.timestamp,
            tenant_id=call.caller.tenant_id,
            user_id=call.caller.user_id,
            model_id=call.model_id,
            tokens=tokens,
            status=status,
            error_code=error_code,
            latency_ms=int((self._clock() - call.started) * 1000),
            cost_usd=cost.usd_text,
            price_version=cost.price_version,
            request_id=call.request_id,
            stage=self._stage,
        )

    def _record(self, event: UsageEvent, call: _Call) -> None:
        self._recorder.record(event, deadline=call.deadline.answer_by)
        self._observe(event)

    def _observe(self, event: UsageEvent) -> None:
        if self._metrics is not None:  # only once the event is durable
            self._metrics.observe(event)

    def _record_failure(self, event: UsageEvent, call: _Call) -> bool:
        # A failed or refused call bills nothing; if even its event cannot be stored, the
        # caller still gets the model error or refusal (not a 503), and the full event is in
        # the log.
        try:
            self._record(event, call)
        except Exception:
            logger.exception(
                "failed-call usage event not recorded", extra={"usage_event": event.to_record()}
            )
            return False
        return True
