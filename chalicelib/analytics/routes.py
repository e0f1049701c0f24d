"""Usage reports over HTTP: GET /usage, GET /admin/usage, GET /admin/tenants/{id}/usage."""

from __future__ import annotations

from datetime import UTC, datetime

from chalice.app import Blueprint, Response

from chalicelib import wiring
from chalicelib.analytics import reports
from chalicelib.budgets.routes import valid_tenant_id
from chalicelib.edge import Call
from chalicelib.routing import admin_route, tenant_route

analytics_routes = Blueprint(__name__)


def _today() -> datetime:
    return datetime.now(UTC)


@tenant_route(analytics_routes, "/usage", methods=["GET"], rate_limited=True)
def get_usage(call: Call) -> Response:
    """The calling tenant's usage: totals, by model, and per-day history. The tenant comes
    from the token alone; a `tenant_id` in the query string is ignored."""
    period = reports.parse_period(call.request.query_params, today=_today().date())
    engine = wiring.query_engine(call.settings)
    return Response(body=reports.tenant_usage(engine, call.caller.tenant_id, period))


@admin_route(analytics_routes, "/admin/usage", methods=["GET"], rate_limited=True)
def get_admin_usage(call: Call) -> Response:
    """Every tenant's totals and usage by model (or one's, with `tenant_id`): admins only."""
    query = call.request.query_params
    period = reports.parse_period(query, today=_today().date())
    tenant_id = reports.parse_tenant_filter(query)
    engine = wiring.query_engine(call.settings)
    return Response(body=reports.tenants_usage(engine, period, tenant_id))


@admin_route(
    analytics_routes, "/admin/tenants/{tenant_id}/usage", methods=["GET"], rate_limited=True
)
def get_tenant_usage(call: Call, tenant_id: str) -> Response:
    """Any tenant's report as that tenant sees it at GET /usage (admins only): the
    dashboard's view of another tenant."""
    tenant = valid_tenant_id(tenant_id)
    period = reports.parse_period(call.request.query_params, today=_today().date())
    engine = wiring.query_engine(call.settings)
    return Response(body=reports.tenant_usage(engine, tenant, period))
