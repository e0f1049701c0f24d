"""Plan endpoints: admins read and set any tenant's plan; tenants read their own."""

from __future__ import annotations

from typing import TypedDict

from chalice.app import Blueprint, Response

from chalicelib import wiring
from chalicelib.budgets.plans import PlanDocument, money_text, parse_plan_body, plan_document
from chalicelib.budgets.service import PlanOverview
from chalicelib.edge import Call
from chalicelib.errors import InvalidRequestError
from chalicelib.identity import MAX_TENANT_ID_LENGTH
from chalicelib.routing import admin_route, tenant_route
from chalicelib.usage import TokenCounts

budget_routes = Blueprint(__name__)


class MonthToDate(TokenCounts):
    """A tenant's counters for the current UTC month (the token counts last)."""

    month: str
    spent_usd: str
    reserved_usd: str
    remaining_usd: str
    requests: int
    requests_in_flight: int


class PlanView(TypedDict):
    """GET /usage/plan."""

    tenant_id: str
    plan: PlanDocument
    plan_source: str
    price_version: str
    month_to_date: MonthToDate


class Aborted(TypedDict):
    """Calls given up at their deadline this month (504, not billed): the provider's exposure.

    `worst_case_usd` is what their reservations held: an upper bound of what Bedrock may bill
    the provider for them.
    """

    requests: int
    worst_case_usd: str


class AdminPlanView(PlanView):
    """GET and PUT /admin/tenants/{tenant_id}/plan: also alerts, aborted calls and who set
    the plan."""

    alerts: dict[str, str]
    aborted: Aborted
    updated_at: str | None
    updated_by: str | None


def plan_view(overview: PlanOverview) -> PlanView:
    """The tenant-facing view of a plan and this month's counters."""
    counters = overview.counters
    budget = overview.plan.monthly_budget_usd
    return PlanView(
        tenant_id=overview.tenant_id,
        plan=plan_document(overview.plan),
        plan_source=overview.source,
        price_version=overview.price_version,
        month_to_date=MonthToDate(
            month=counters.month,
            spent_usd=money_text(counters.settled_usd),
            reserved_usd=money_text(counters.reserved_usd),
            remaining_usd=money_text(counters.remaining_usd(budget)),
            requests=counters.requests,
            requests_in_flight=counters.open_reservations,
            **counters.tokens.as_dict(),
        ),
    )


def admin_plan_view(overview: PlanOverview) -> AdminPlanView:
    """The administrator's view: the tenant view plus alert markers and provenance."""
    view = plan_view(overview)
    stored = overview.stored
    return AdminPlanView(
        tenant_id=view["tenant_id"],
        plan=view["plan"],
        plan_source=view["plan_source"],
        price_version=view["price_version"],
        month_to_date=view["month_to_date"],
        alerts={str(p): v for p, v in sorted(overview.counters.alerts.items())},
        aborted=Aborted(
            requests=overview.counters.aborted_requests,
            worst_case_usd=money_text(overview.counters.aborted_usd),
        ),
        updated_at=stored.updated_at if stored else None,
        updated_by=stored.updated_by if stored else None,
    )


def valid_tenant_id(raw: str) -> str:
    """A tenant id from the path: 1-128 printable characters."""
    if not raw or len(raw) > MAX_TENANT_ID_LENGTH or not raw.isprintable():
        raise InvalidRequestError(
            f"'tenant_id' must be 1 to {MAX_TENANT_ID_LENGTH} printable characters."
        )
    return raw


@admin_route(budget_routes, "/admin/tenants/{tenant_id}/plan", methods=["GET"])
def get_tenant_plan(call: Call, tenant_id: str) -> Response:
    """Any tenant's plan and month-to-date counters (admins only)."""
    service = wiring.budget_service(call.settings)
    return Response(body=dict(admin_plan_view(service.overview(valid_tenant_id(tenant_id)))))


@admin_route(budget_routes, "/admin/tenants/{tenant_id}/plan", methods=["PUT"])
def put_tenant_plan(call: Call, tenant_id: str) -> Response:
    """Replace a tenant's plan (admins only); invalid plans are 400 naming the field."""
    tenant = valid_tenant_id(tenant_id)
    service = wiring.budget_service(call.settings)
    plan = parse_plan_body(call.request.raw_body, service.prices, call.settings.model_id)
    updated_by = call.caller.username or call.caller.user_id
    return Response(body=dict(admin_plan_view(service.set_plan(tenant, plan, updated_by))))


@tenant_route(budget_routes, "/usage/plan", methods=["GET"], rate_limited=True)
def get_own_plan(call: Call) -> Response:
    """The caller's own tenant: plan, spend and remaining budget this month."""
    service = wiring.budget_service(call.settings)
    return Response(body=dict(plan_view(service.overview(call.caller.tenant_id))))
