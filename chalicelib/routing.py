"""Route declarations: a tenant or admin route is authenticated by how it is declared."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from chalice.app import Chalice, CognitoUserPoolAuthorizer, Request, Response

from chalicelib import logs, wiring
from chalicelib.api_limits import USAGE_QUERIES, check_rate
from chalicelib.edge import Call, authenticate, error_response, request_deadline, request_id
from chalicelib.errors import MeteringError
from chalicelib.settings import route_authorizer_needed, route_authorizer_pool_arn

logger = logging.getLogger(__name__)

View = Callable[..., Response]  # view(call, **uri_params)
PublicView = Callable[..., Response]  # view(settings, **uri_params)
Access = Literal["tenant", "admin"]

# Set on every handler declared here, naming who may call it; `unauthenticated_routes` reads it.
_ACCESS_ATTRIBUTE = "route_access"
_ACCESS: frozenset[str] = frozenset({"tenant", "admin"})
_PUBLIC = "public"
_REASON_ATTRIBUTE = "route_public_reason"

# On every authenticated response: what it holds is one caller's data, so no cache (the
# browser's, a proxy's) may keep it, and browsers must not guess its type.
PRIVATE_HEADERS: dict[str, str] = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


class RouteHost(Protocol):
    """A Chalice app or Blueprint: where routes are declared and the current request lives."""

    @property
    def current_request(self) -> Request | None: ...

    @property
    def lambda_context(self) -> Any: ...

    def route(self, path: str, **kwargs: Any) -> Callable[..., Any]: ...


def route_authorizer() -> CognitoUserPoolAuthorizer | None:
    """API Gateway's Cognito authorizer for deployed stages; None where the app verifies tokens.

    `chalice local` does not verify Cognito tokens (and fails on malformed ones), so the local
    stage declares routes without it and every request is verified by `edge.authenticate`.
    Decided when a route is declared, that is when app.py is imported: Chalice builds the API
    definition from the declared routes.
    """
    pool_arn = route_authorizer_pool_arn()
    if pool_arn is None:
        return None
    return CognitoUserPoolAuthorizer("TenantUserPool", provider_arns=[pool_arn])


def tenant_route(
    host: RouteHost,
    path: str,
    *,
    methods: Sequence[str] = ("GET",),
    rate_limited: bool = False,
) -> Callable[[View], View]:
    """Declare a route that any verified tenant user may call; the view gets their `Call`.

    The declaration does everything a route needs to be safe: the Chalice route with API
    Gateway's Cognito authorizer (deployed stages), then, on every request, the log context
    (request id, then tenant), the caller from the verified token (checked by the app itself
    where `TOKEN_VERIFICATION=app`), and domain errors mapped to HTTP responses.

    Decorators rather than a Chalice `http` middleware: a middleware could check tokens for
    every route, but it cannot put the authorizer on a route (part of the API definition
    Chalice generates), cannot hand the view its `Call`, and cannot tell admin routes apart.
    A bare `@app.route` stays possible, so tests/functional/test_route_authentication.py walks
    `app.routes` with `unauthenticated_routes` and fails on any route not declared here.

    `rate_limited`: the route is one of the usage queries, which share a per-tenant limit of
    USAGE_REQUESTS_PER_MINUTE (429 with Retry-After past it; chalicelib.api_limits).
    """
    return _declare(host, path, methods, "tenant", rate_limited)


def admin_route(
    host: RouteHost,
    path: str,
    *,
    methods: Sequence[str] = ("GET",),
    rate_limited: bool = False,
) -> Callable[[View], View]:
    """Declare a route for provider administrators (`ADMIN_GROUP`): like `tenant_route`, and
    any other verified caller gets 403 before the view runs."""
    return _declare(host, path, methods, "admin", rate_limited)


def _declare(
    host: RouteHost, path: str, methods: Sequence[str], access: Access, rate_limited: bool
) -> Callable[[View], View]:
    authorizer = route_authorizer()

    def decorate(view: View) -> View:
        handler = _authenticated(host, view, admin=access == "admin", rate_limited=rate_limited)
        setattr(handler, _ACCESS_ATTRIBUTE, access)
        host.route(path, methods=list(methods), authorizer=authorizer)(handler)
        return handler

    return decorate


def _authenticated(host: RouteHost, view: View, *, admin: bool, rate_limited: bool) -> View:
    """The view behind authentication, log context, rate limit and error mapping."""

    @functools.wraps(view)
    def handler(**uri_params: Any) -> Response:
        request = host.current_request
        if request is None:  # Chalice sets it before calling a route's view
            raise RuntimeError("no current request")
        call_id = request_id(request, host.lambda_context)
        logs.clear()
        logs.bind(request_id=call_id)
        try:
            settings = wiring.current_settings()
            deadline = request_deadline(settings, host.lambda_context, request)
            caller = authenticate(request, settings, wiring.verifier)
            logs.bind(tenant_id=caller.tenant_id)
            call = Call(request, caller, settings, call_id, deadline)
            if admin:
                call.require_admin()
            limiter = wiring.request_limiter(settings) if rate_limited else None
            if limiter is not None:
                check_rate(
                    limiter,
                    caller.tenant_id,
                    USAGE_QUERIES,
                    settings.usage_requests_per_minute,
                    datetime.now(UTC),
                )
            return _private(view(call, **uri_params))
        except MeteringError as exc:
            response = error_response(exc)
            logger.info(
                "request refused",
                extra={"status": response.status_code, "error_type": type(exc).__name__},
            )
            return _private(response)
        finally:
            logs.clear()

    return handler


def _private(response: Response) -> Response:
    for name, value in PRIVATE_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def public_route(
    host: RouteHost, path: str, *, reason: str, methods: Sequence[str] = ("GET",)
) -> Callable[[PublicView], PublicView]:
    """Declare a route that anyone may call without a token; the view gets the `Settings`.

    For what holds no tenant data and must be reachable before sign-in (the dashboard page).
    `reason` says why it is public; it stays on the handler, and `public_routes` lists every
    such route with it, so tests/functional/test_route_authentication.py names each one. No
    authorizer, on any stage; still the log context and domain errors mapped to HTTP.
    """
    if not reason.strip():
        raise ValueError(f"{path}: a public route needs its reason")

    def decorate(view: PublicView) -> PublicView:
        @functools.wraps(view)
        def handler(**uri_params: Any) -> Response:
            request = host.current_request
            logs.clear()
            logs.bind(request_id=request_id(request, host.lambda_context))
            try:
                return view(wiring.current_settings(), **uri_params)
            except MeteringError as exc:
                return error_response(exc)
            finally:
                logs.clear()

        setattr(handler, _ACCESS_ATTRIBUTE, _PUBLIC)
        setattr(handler, _REASON_ATTRIBUTE, reason)
        host.route(path, methods=list(methods))(handler)
        return handler

    return decorate


def public_routes(app: Chalice) -> dict[str, str]:
    """The routes of `app` declared with `public_route`, as {"METHOD /path": reason}."""
    return {
        f"{method} {path}": str(getattr(entry.view_function, _REASON_ATTRIBUTE))
        for path, entries in app.routes.items()
        for method, entry in entries.items()
        if getattr(entry.view_function, _ACCESS_ATTRIBUTE, None) == _PUBLIC
    }


def unauthenticated_routes(app: Chalice, *, exceptions: Collection[str] = ()) -> dict[str, str]:
    """Routes of `app` that a caller could reach without a verified token, as
    {"METHOD /path": why}, leaving out the `exceptions` (named the same way).

    A route is authenticated when it was declared with `tenant_route` or `admin_route` and,
    where API Gateway verifies tokens (`TOKEN_VERIFICATION=apigateway`), carries its authorizer.
    A `public_route` is reported too, with its reason, unless named in `exceptions`.
    """
    needs_authorizer = route_authorizer_needed()
    found: dict[str, str] = {}
    for path, entries in app.routes.items():
        for method, entry in entries.items():
            name = f"{method} {path}"
            if name in exceptions:
                continue
            access = getattr(entry.view_function, _ACCESS_ATTRIBUTE, None)
            if access == _PUBLIC:
                reason = getattr(entry.view_function, _REASON_ATTRIBUTE, "")
                found[name] = f"declared public: {reason}"
            elif access not in _ACCESS:
                found[name] = "not declared with tenant_route or admin_route: no token check"
            elif needs_authorizer and entry.authorizer is None:
                found[name] = "no Cognito authorizer on a stage verified by API Gateway"
    return found
