"""GET /usage (the caller's tenant) and GET /admin/usage (provider admins): a Blueprint."""

from __future__ import annotations

from datetime import UTC, datetime

from chalice.app import Blueprint, Response

from chalicelib import wiring
from chalicelib.analytics import reports
from chalicelib.edge import Call
from chalicelib.routing import admin_route, tenant_route

analytics_routes = Blueprint(__name__)


def _today() -> datetime:
    return datetime.now(UTC)


@tenant_route(analytics_routes, "/usage", methods=["GET"], rate_limited=True)
def get_usage(call: Call) -> Response:
    """The calling tenant's usage: totals and per-day history. The tenant comes from the
    token alone; a `tenant_id` in the query string is ignored."""
    period = reports.parse_period(call.request.query_params, today=_today().date())
    engine = wiring.query_engine(call.settings)
    return Response(body=reports.tenant_usage(engine, call.caller.tenant_id, period))


@admin_route(analytics_routes, "/admin/usage", methods=["GET"], rate_limited=True)
def get_admin_usage(call: Call) -> Response:
    """Every tenant's totals (or one, with `tenant_id`): provider admins only."""
    query = call.request.query_params
    period = reports.parse_period(query, today=_today().date())
    tenant_id = reports.parse_tenant_filter(query)
    engine = wiring.query_engine(call.settings)
    return Response(body=reports.tenants_usage(engine, period, tenant_id))
