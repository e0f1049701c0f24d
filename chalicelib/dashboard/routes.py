"""GET /dashboard: the usage dashboard page, public (it holds no data; sign-in happens in it)."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib.dashboard.page import render
from chalicelib.routing import public_route
from chalicelib.settings import Settings

dashboard_routes = Blueprint(__name__)

PAGE_REASON = (
    "the dashboard's page: static code and the stage's public sign-in settings (region, app "
    "client id, Cognito endpoint), no tenant data; every number it shows comes from "
    "/usage, /usage/plan or /admin/... with the signed-in user's token"
)


@public_route(dashboard_routes, "/dashboard", reason=PAGE_REASON)
def get_dashboard(settings: Settings) -> Response:
    """The sign-in page and usage charts, as one self-contained HTML document."""
    page = render(settings)
    return Response(body=page.html, headers=dict(page.headers))
