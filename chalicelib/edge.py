"""The HTTP edge: who is calling, and domain errors mapped to HTTP responses."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from chalice.app import Request, Response

from chalicelib.errors import (
    AnalyticsUnavailableError,
    AuthenticationError,
    BudgetStoreUnavailableError,
    ConfigurationError,
    ForbiddenError,
    IdentityProviderUnavailableError,
    InvalidRequestError,
    MeteringError,
    ModelThrottledError,
    ModelUnavailableError,
    NotFoundError,
    RateLimitedError,
    UsageNotDurableError,
)
from chalicelib.identity import Caller, bearer_token, caller_from_claims
from chalicelib.settings import VERIFY_IN_APP, Settings

logger = logging.getLogger(__name__)

# Domain error -> (HTTP status, Code in the body), most specific first.
_STATUS: list[tuple[type[MeteringError], int, str]] = [
    (InvalidRequestError, 400, "BadRequestError"),
    (AuthenticationError, 401, "UnauthorizedError"),
    (ForbiddenError, 403, "ForbiddenError"),
    (NotFoundError, 404, "NotFoundError"),
    (RateLimitedError, 429, "TooManyRequestsError"),
    (ModelThrottledError, 429, "TooManyRequestsError"),
    (ModelUnavailableError, 502, "BadGatewayError"),
    (UsageNotDurableError, 503, "ServiceUnavailableError"),
    (IdentityProviderUnavailableError, 503, "ServiceUnavailableError"),
    (BudgetStoreUnavailableError, 503, "ServiceUnavailableError"),
    (AnalyticsUnavailableError, 503, "ServiceUnavailableError"),
]
UNAVAILABLE_RETRY_AFTER_S = 5
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
    if isinstance(exc, RateLimitedError | ModelThrottledError):
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


def request_id(request: Request | None, lambda_context: Any) -> str:
    """API Gateway's request id; `chalice local` has none, so the Lambda context's stands in."""
    found = (request.context or {}).get("requestId") if request else None
    if not found and lambda_context is not None:
        found = getattr(lambda_context, "aws_request_id", "")
    return str(found or "")
