"""The HTTP edge: who is calling, and domain errors mapped to HTTP responses."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from chalice.app import Request, Response

from chalicelib.chat import ChatResult, KeyUse
from chalicelib.deadlines import Deadline
from chalicelib.errors import (
    AnalyticsUnavailableError,
    AuthenticationError,
    BudgetStoreUnavailableError,
    ConfigurationError,
    DeadlineExceededError,
    ForbiddenError,
    IdempotencyConflictError,
    IdempotencyKeyReusedError,
    IdempotencyStoreUnavailableError,
    IdentityProviderUnavailableError,
    InvalidRequestError,
    MeteringError,
    ModelThrottledError,
    ModelUnavailableError,
    NotFoundError,
    RateLimitedError,
    UsageNotDurableError,
)
from chalicelib.idempotency import body_fingerprint, idempotency_key, key_digest
from chalicelib.identity import Caller, bearer_token, caller_from_claims
from chalicelib.settings import VERIFY_IN_APP, Settings

logger = logging.getLogger(__name__)

# Domain error -> (HTTP status, Code in the body), most specific first.
_STATUS: list[tuple[type[MeteringError], int, str]] = [
    (InvalidRequestError, 400, "BadRequestError"),
    (AuthenticationError, 401, "UnauthorizedError"),
    (ForbiddenError, 403, "ForbiddenError"),
    (NotFoundError, 404, "NotFoundError"),
    (IdempotencyConflictError, 409, "ConflictError"),
    (IdempotencyKeyReusedError, 422, "UnprocessableEntityError"),
    (RateLimitedError, 429, "TooManyRequestsError"),
    (ModelThrottledError, 429, "TooManyRequestsError"),
    (ModelUnavailableError, 502, "BadGatewayError"),
    (UsageNotDurableError, 503, "ServiceUnavailableError"),
    (IdentityProviderUnavailableError, 503, "ServiceUnavailableError"),
    (BudgetStoreUnavailableError, 503, "ServiceUnavailableError"),
    (AnalyticsUnavailableError, 503, "ServiceUnavailableError"),
    (IdempotencyStoreUnavailableError, 503, "ServiceUnavailableError"),
    (DeadlineExceededError, 504, "GatewayTimeoutError"),
]
UNAVAILABLE_RETRY_AFTER_S = 5
# On an answer replayed for a repeated Idempotency-Key (status, body and X-Request-Id are the
# first answer's).
REPLAYED_HEADER = "Idempotent-Replayed"
MISCONFIGURED = "The service is not configured correctly; the operator has been alerted."


class TokenVerifier(Protocol):
    """Checks a bearer ID token and returns its verified claims (chalicelib.identity)."""

    def verify(self, token: str) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Call:
    """One authenticated API call."""

    request: Request
    caller: Caller
    settings: Settings
    request_id: str
    deadline: Deadline

    def require_admin(self) -> None:
        """Refuse (403) callers outside the provider's admin group."""
        if not self.caller.is_member(self.settings.admin_group):
            raise ForbiddenError("This endpoint is for provider administrators.")


def authenticate(
    request: Request, settings: Settings, verifier: Callable[[Settings], TokenVerifier]
) -> Caller:
    """The verified caller: from API Gateway's claims, or from the ID token checked here by
    the stage's `verifier`."""
    if settings.token_verification == VERIFY_IN_APP:
        token = bearer_token(request.headers or {})
        claims = verifier(settings).verify(token)
    else:
        authorizer = (request.context or {}).get("authorizer") or {}
        claims = authorizer.get("claims") or {}
        if not claims:
            raise AuthenticationError("Missing or invalid token.")
    return caller_from_claims(claims)


def error_response(exc: MeteringError) -> Response:
    """A Chalice-style error body ({"Code", "Message"}) with the right status and headers."""
    if isinstance(exc, ConfigurationError):
        logger.error("configuration error", extra={"error": exc.message})
        return _response(500, "InternalServerError", MISCONFIGURED, {})
    mapped = next((row for row in _STATUS if isinstance(exc, row[0])), None)
    if mapped is None:
        logger.error("unmapped domain error", extra={"error_type": type(exc).__name__})
        return _response(500, "InternalServerError", "An internal server error occurred.", {})
    _, status, code = mapped
    headers: dict[str, str | list[str]] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimitedError | ModelThrottledError | IdempotencyConflictError):
        headers["Retry-After"] = str(exc.retry_after_s)
    elif status == 503:
        headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_S)
    event_id = getattr(exc, "event_id", None)
    if event_id:
        headers["X-Request-Id"] = event_id
    return _response(status, code, exc.message, headers)


def _response(
    status: int, code: str, message: str, headers: dict[str, str | list[str]]
) -> Response:
    return Response(body={"Code": code, "Message": message}, status_code=status, headers=headers)


def key_use(request: Request) -> KeyUse | None:
    """The request's Idempotency-Key (400 if malformed) with its body's fingerprint."""
    key = idempotency_key(request.headers or {})
    if key is None:
        return None
    return KeyUse(key_digest(key), body_fingerprint(request.raw_body))


def chat_response(result: ChatResult) -> Response:
    """A chat answer, or the replay of one: its status, exact body and X-Request-Id."""
    headers: dict[str, str | list[str]] = {
        "Content-Type": "application/json",
        "X-Request-Id": result.event_id,
    }
    if result.replayed:
        headers[REPLAYED_HEADER] = "true"
    return Response(body=result.body, status_code=result.status, headers=headers)


def request_deadline(
    settings: Settings,
    lambda_context: Any,
    request: Request | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> Deadline:
    """When this request must be answered: REQUEST_DEADLINE_S (API Gateway's 29 s) counted
    from when API Gateway received it, or what the Lambda context says is left if that is
    less. API Gateway's clock starts before the handler runs (a cold start can take a second
    or two), so its `requestTimeEpoch` is used when the event has one; `chalice local` has
    none, and there the budget counts from now."""
    budget_s: float = settings.request_deadline_s
    received_ms = ((request.context or {}) if request else {}).get("requestTimeEpoch")
    if isinstance(received_ms, int | float) and not isinstance(received_ms, bool):
        waited = wall_clock() - received_ms / 1000
        budget_s -= min(max(waited, 0.0), budget_s)
    remaining = getattr(lambda_context, "get_remaining_time_in_millis", None)
    return Deadline.start(budget_s, remaining() if remaining else None)


def request_id(request: Request | None, lambda_context: Any) -> str:
    """API Gateway's request id; `chalice local` has none, so the Lambda context's stands in."""
    found = (request.context or {}).get("requestId") if request else None
    if not found and lambda_context is not None:
        found = getattr(lambda_context, "aws_request_id", "")
    return str(found or "")
