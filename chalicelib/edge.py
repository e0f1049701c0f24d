"""The HTTP edge: who is calling, and domain errors mapped to HTTP responses."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from chalice.app import CognitoUserPoolAuthorizer, Request, Response

from chalicelib import logs, wiring
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
from chalicelib.settings import USER_POOL_ARN, VERIFY_IN_APP, Settings, route_authorizer_needed

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


class RouteHost(Protocol):
    """A Chalice app or Blueprint: where the current request and Lambda context live."""

    @property
    def current_request(self) -> Request | None: ...

    @property
    def lambda_context(self) -> Any: ...


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


def route_authorizer() -> CognitoUserPoolAuthorizer | None:
    """API Gateway's Cognito authorizer for deployed stages; None where the app verifies tokens.

    `chalice local` does not verify Cognito tokens (and fails on malformed ones), so the local
    stage declares routes without it and every request is verified by `authenticate`.
    """
    if not route_authorizer_needed():
        return None
    pool_arn = os.environ.get(USER_POOL_ARN, "")
    if not pool_arn:
        raise ConfigurationError(f"{USER_POOL_ARN} must be set for stages verified by API Gateway")
    return CognitoUserPoolAuthorizer("TenantUserPool", provider_arns=[pool_arn])


def authenticate(request: Request, settings: Settings) -> Caller:
    """The verified caller: from API Gateway's claims, or from the ID token checked here."""
    if settings.token_verification == VERIFY_IN_APP:
        token = bearer_token(request.headers or {})
        claims = wiring.verifier(settings).verify(token)
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


def _request_id(app: RouteHost) -> str:
    """API Gateway's request id; `chalice local` has none, so the Lambda context's stands in."""
    request = app.current_request
    request_id = (request.context or {}).get("requestId") if request else None
    if not request_id and app.lambda_context is not None:
        request_id = getattr(app.lambda_context, "aws_request_id", "")
    return str(request_id or "")


def endpoint(app: RouteHost) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """Wrap a view: bind log context, authenticate, map domain errors to HTTP."""

    def decorate(view: Callable[..., Response]) -> Callable[..., Response]:
        @functools.wraps(view)
        def handler(**uri_params: Any) -> Response:
            request = app.current_request
            if request is None:  # Chalice sets it before calling a route's view
                raise RuntimeError("no current request")
            request_id = _request_id(app)
            logs.clear()
            logs.bind(request_id=request_id)
            try:
                settings = wiring.current_settings()
                caller = authenticate(request, settings)
                logs.bind(tenant_id=caller.tenant_id)
                return view(Call(request, caller, settings, request_id), **uri_params)
            except MeteringError as exc:
                response = error_response(exc)
                logger.info(
                    "request refused",
                    extra={"status": response.status_code, "error_type": type(exc).__name__},
                )
                return response
            finally:
                logs.clear()

        return handler

    return decorate
