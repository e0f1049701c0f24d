"""Every route of the app needs a verified token, and the check that says so can fail."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chalice.app import Blueprint, Chalice, CognitoUserPoolAuthorizer, Response
from chalice.test import Client

from chalicelib.dashboard.routes import PAGE_REASON
from chalicelib.edge import Call
from chalicelib.routing import (
    admin_route,
    public_route,
    public_routes,
    tenant_route,
    unauthenticated_routes,
)
from chalicelib.settings import Settings
from tests.functional.conftest import auth

# Routes a caller may reach without a verified token, on purpose, as "METHOD /path" with the
# reason beside each. Each must be declared with `public_route` (a bare route is never an
# exception), with that reason.
PUBLIC_ROUTES: dict[str, str] = {
    "GET /dashboard": PAGE_REASON,  # the page must load before anyone has signed in
}

POOL_ARN = "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Example1"


def test_every_route_of_the_app_requires_a_verified_token() -> None:
    from app import app

    assert app.routes  # the walk below must have something to walk
    assert unauthenticated_routes(app, exceptions=PUBLIC_ROUTES) == {}


def test_every_named_exception_is_a_route_of_the_app() -> None:
    from app import app

    routes = {f"{method} {path}" for path, entries in app.routes.items() for method in entries}
    assert set(PUBLIC_ROUTES) <= routes


def test_every_named_exception_is_declared_public_with_its_reason() -> None:
    from app import app

    assert public_routes(app) == PUBLIC_ROUTES


def test_a_public_route_is_reported_unless_named() -> None:
    app = Chalice(app_name="throwaway")

    @public_route(app, "/page", reason="a page before sign-in")
    def page(settings: Settings) -> Response:
        return Response(body="ok")

    assert unauthenticated_routes(app) == {"GET /page": "declared public: a page before sign-in"}
    assert unauthenticated_routes(app, exceptions={"GET /page"}) == {}
    assert public_routes(app) == {"GET /page": "a page before sign-in"}
    with pytest.raises(ValueError, match="reason"):
        public_route(app, "/other", reason=" ")


def test_authenticated_answers_are_never_cached(throwaway_client: Client) -> None:
    for response in (
        throwaway_client.http.get("/closed", headers=auth("tenant-a")),
        throwaway_client.http.get("/closed"),  # refused: the 401 too
    ):
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def throwaway_app() -> Chalice:
    """An app with one bare and one declared route, on the app and on a Blueprint."""
    app = Chalice(app_name="throwaway")
    blueprint = Blueprint(__name__)

    @app.route("/open")
    def open_view() -> Response:
        return Response(body={"open": True})

    @tenant_route(app, "/closed")
    def closed_view(call: Call) -> Response:
        return Response(body={"tenant": call.caller.tenant_id})

    @blueprint.route("/blueprint/open", methods=["POST"])
    def blueprint_open() -> Response:
        return Response(body={})

    @admin_route(blueprint, "/blueprint/admin/{name}", methods=["PUT"])
    def blueprint_admin(call: Call, name: str) -> Response:
        return Response(body={"name": name, "by": call.caller.username})

    app.register_blueprint(blueprint)
    return app


def test_a_bare_route_is_reported_on_the_app_and_on_a_blueprint() -> None:
    found = unauthenticated_routes(throwaway_app())
    assert set(found) == {"GET /open", "POST /blueprint/open"}
    assert "no token check" in found["GET /open"]


def test_a_named_exception_is_left_out() -> None:
    found = unauthenticated_routes(throwaway_app(), exceptions={"GET /open"})
    assert set(found) == {"POST /blueprint/open"}


@pytest.fixture
def throwaway_client(app_env: Settings) -> Iterator[Client]:
    with Client(throwaway_app()) as client:
        yield client


def test_the_bare_route_really_is_open_and_the_declared_ones_are_not(
    throwaway_client: Client,
) -> None:
    assert throwaway_client.http.get("/open").status_code == 200
    assert throwaway_client.http.get("/closed").status_code == 401
    assert throwaway_client.http.put("/blueprint/admin/x").status_code == 401
    closed = throwaway_client.http.get("/closed", headers=auth("tenant-a"))
    assert (closed.status_code, closed.json_body) == (200, {"tenant": "tenant-a"})


def test_an_admin_route_refuses_other_tenants_users_before_the_view(
    throwaway_client: Client,
) -> None:
    refused = throwaway_client.http.put("/blueprint/admin/x", headers=auth("tenant-a"))
    assert refused.status_code == 403
    admin = auth("provider", **{"cognito:groups": ["admins"], "cognito:username": "ops"})
    allowed = throwaway_client.http.put("/blueprint/admin/x", headers=admin)
    assert (allowed.status_code, allowed.json_body) == (200, {"name": "x", "by": "ops"})


def test_where_api_gateway_verifies_tokens_declared_routes_carry_the_authorizer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = throwaway_app()  # declared while the app verifies tokens: no authorizer
    monkeypatch.setenv("TOKEN_VERIFICATION", "apigateway")
    monkeypatch.setenv("USER_POOL_ARN", POOL_ARN)
    deployed = throwaway_app()

    for path, method in (("/closed", "GET"), ("/blueprint/admin/{name}", "PUT")):
        authorizer = deployed.routes[path][method].authorizer
        assert isinstance(authorizer, CognitoUserPoolAuthorizer)
        swagger = authorizer.to_swagger()["x-amazon-apigateway-authorizer"]
        assert swagger == {"type": "cognito_user_pools", "providerARNs": [POOL_ARN]}
    assert set(unauthenticated_routes(deployed)) == {"GET /open", "POST /blueprint/open"}
    # The same declarations without the authorizer are reported on such a stage.
    assert unauthenticated_routes(local)["GET /closed"].startswith("no Cognito authorizer")
