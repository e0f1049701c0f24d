"""Bedrock SaaS Metering: the Chalice app. Wiring only: blueprints, routes, schedules."""

from __future__ import annotations

from typing import Any

from chalice.app import Chalice, CloudWatchEvent, Cron, Rate, Response

from chalicelib import logs, wiring
from chalicelib.analytics import maintenance
from chalicelib.analytics.routes import analytics_routes
from chalicelib.budgets.routes import budget_routes
from chalicelib.chat import parse_chat_request
from chalicelib.dashboard.routes import dashboard_routes
from chalicelib.edge import Call, chat_response, key_use
from chalicelib.routing import tenant_route

app = Chalice(app_name="bedrock-saas-metering")
app.debug = False  # never put stack traces in response bodies
logs.configure()

app.register_blueprint(analytics_routes)  # GET /usage, GET /admin/usage, /admin/tenants/{id}/usage
app.register_blueprint(budget_routes)  # GET/PUT /admin/tenants/{tenant_id}/plan, GET /usage/plan
app.register_blueprint(dashboard_routes)  # GET /dashboard (public: the page signs in itself)


@tenant_route(app, "/bedrock/chat", methods=["POST"])
def bedrock_chat(call: Call) -> Response:
    """Answer a tenant's prompt; the call is metered before the answer is returned. With an
    Idempotency-Key, a retry gets the first answer again, billed once."""
    request = parse_chat_request(call.request.raw_body, wiring.chat_limits(call.settings))
    result = wiring.chat_service(call.settings).chat(
        call.caller,
        request,
        call.request_id,
        deadline=call.deadline,
        key=key_use(call.request),
    )
    return chat_response(result)


# Partition maintenance (UTC). A run reads only the objects its day's committed generation
# does not hold yet; overlapping runs of a day take turns through the day's lease.
@app.schedule(Rate(2, unit=Rate.MINUTES))
def maintain_usage_today(event: CloudWatchEvent) -> dict[str, Any]:
    """Every 2 minutes: today's partition (and yesterday's, while its late events arrive)."""
    settings = wiring.current_settings()
    now = maintenance.schedule_time(event)
    return wiring.run_partition_maintenance(settings, now, maintenance.fresh_days(settings, now))


@app.schedule(Cron(10, 3, "*", "*", "?", "*"))
def maintain_usage_yesterday(event: CloudWatchEvent) -> dict[str, Any]:
    """After yesterday's lateness window has closed: anything the frequent runs missed."""
    now = maintenance.schedule_time(event)
    return wiring.run_partition_maintenance(wiring.current_settings(), now, maintenance.YESTERDAY)


@app.schedule(Cron(20, 3, "*", "*", "?", "*"))
def sweep_late_usage(event: CloudWatchEvent) -> dict[str, Any]:
    """Daily: the days before yesterday, rebuilt only where objects were delivered late."""
    settings = wiring.current_settings()
    now = maintenance.schedule_time(event)
    return wiring.run_partition_maintenance(settings, now, maintenance.sweep_days(settings))


@app.schedule(Rate(5, unit=Rate.MINUTES))
def repair_budget_counters(event: CloudWatchEvent) -> dict[str, int]:
    """Every 5 minutes: finish expired budget reservations, resend missed budget alerts."""
    return wiring.run_budget_repair(wiring.current_settings(), maintenance.schedule_time(event))
