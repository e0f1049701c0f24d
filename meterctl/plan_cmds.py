"""meterctl plan commands: show and set a tenant's plan (admins), or show one's own."""

from __future__ import annotations

import argparse
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from meterctl import accounts, api
from meterctl.target import Target


def register(commands: Any) -> None:
    """Add `plan show`, `plan set` and `plan mine` to meterctl's parser."""
    plan = commands.add_parser(
        "plan", help="tenant plans: budget, rate limits, allowed models, month-to-date spend"
    ).add_subparsers(dest="action", required=True)

    show = plan.add_parser("show", help="a tenant's plan and this month's counters (admin)")
    show.add_argument("--tenant", required=True)
    _common(show)
    show.set_defaults(handler=cmd_show)

    change = plan.add_parser(
        "set", help="change a tenant's plan (admin); fields not given keep their value"
    )
    change.add_argument("--tenant", required=True)
    change.add_argument("--budget", help="monthly budget in USD, e.g. 25.00")
    change.add_argument("--tokens-per-minute", type=int)
    change.add_argument("--requests-per-minute", type=int)
    change.add_argument(
        "--allow-model",
        action="append",
        dest="models",
        help="a model id the tenant may use (repeat for several; replaces the list)",
    )
    _common(change)
    change.set_defaults(handler=cmd_set)

    mine = plan.add_parser("mine", help="your own tenant's plan and remaining budget")
    _common(mine)
    mine.set_defaults(handler=cmd_mine)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    accounts.add_credential_arguments(parser)


def _path(tenant_id: str) -> str:
    from urllib.parse import quote

    return f"/admin/tenants/{quote(tenant_id, safe='')}/plan"


def cmd_show(args: argparse.Namespace, target: Target) -> int:
    body = api.require_ok(
        api.call(target, "GET", _path(args.tenant), accounts.token_for(args, target))
    )
    _print(body, args.json)
    return 0


def cmd_mine(args: argparse.Namespace, target: Target) -> int:
    body = api.require_ok(api.call(target, "GET", "/usage/plan", accounts.token_for(args, target)))
    _print(body, args.json)
    return 0


def cmd_set(args: argparse.Namespace, target: Target) -> int:
    token = accounts.token_for(args, target)
    current = api.require_ok(api.call(target, "GET", _path(args.tenant), token))["plan"]
    plan = dict(current)
    if args.budget is not None:
        plan["monthly_budget_usd"] = args.budget
    if args.tokens_per_minute is not None:
        plan["tokens_per_minute"] = args.tokens_per_minute
    if args.requests_per_minute is not None:
        plan["requests_per_minute"] = args.requests_per_minute
    if args.models:
        plan["allowed_models"] = args.models
    body = api.require_ok(api.call(target, "PUT", _path(args.tenant), token, body=plan))
    _print(body, args.json)
    return 0


def _print(body: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(body, indent=2, sort_keys=True))
        return
    plan, month = body["plan"], body["month_to_date"]
    budget = _decimal(plan["monthly_budget_usd"])
    spent = _decimal(month["spent_usd"])
    share = f" ({spent / budget:.1%})" if budget > 0 else ""
    source = "own plan" if body["plan_source"] == "tenant" else "stage default plan"
    print(f"tenant          {body['tenant_id']} ({source})")
    print(f"month           {month['month']} (UTC)")
    print(f"monthly budget  ${plan['monthly_budget_usd']}")
    print(f"spent           ${month['spent_usd']}{share} in {month['requests']} requests")
    print(f"in flight       ${month['reserved_usd']} ({month['requests_in_flight']} requests)")
    print(f"remaining       ${month['remaining_usd']}")
    print(
        f"limits          {plan['tokens_per_minute']} tokens/min, "
        f"{plan['requests_per_minute']} requests/min"
    )
    print(f"allowed models  {', '.join(plan['allowed_models'])}")
    if "alerts" in body:
        sent = ", ".join(f"{p}% {v}" for p, v in sorted(body["alerts"].items(), key=_percent))
        print(f"alerts          {sent or 'none this month'}")
    aborted = body.get("aborted")
    if aborted and aborted["requests"]:
        print(
            f"aborted         {aborted['requests']} requests past their deadline, not billed "
            f"(up to ${aborted['worst_case_usd']} of model cost)"
        )
    print(f"prices          version {body['price_version']}")


def _percent(item: tuple[str, str]) -> int:
    return int(item[0])


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        return Decimal(0)
