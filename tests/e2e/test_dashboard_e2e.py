"""The usage dashboard in a real browser (Debian's Chromium, headless, driven by Playwright)
against the local stack: sign in, the chart and totals, sign out, a wrong password, an expired
token, an admin switching tenants, and no way for a tenant to see another tenant."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from playwright.sync_api import (
    Browser,
    Page,
    Playwright,
    Request,
    Route,
    expect,
    sync_playwright,
)

from local.running import PASSWORD, RunningStack

pytestmark = pytest.mark.e2e

CHROMIUM = Path(os.environ.get("METER_CHROMIUM", "/usr/bin/chromium"))
# What works for Debian's Chromium as root in a container, with nothing fetched from outside.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TOTALS = ("requests", "failed_requests", "input_tokens", "output_tokens", "total_tokens")
WAIT_S = 180


@dataclass(frozen=True)
class Tenants:
    """Two tenants with curated usage, and an admin, all signed up on the stack."""

    a: str
    a_user: str
    a_token: str
    b: str
    b_user: str
    b_token: str
    admin_user: str
    admin_token: str


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"No Chromium at {CHROMIUM}: `apt-get install chromium` (.ci/run does), "
            "or point METER_CHROMIUM at one."
        )
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser, local_stack: RunningStack) -> Iterator[Page]:
    """A fresh browser context (nothing remembered) on a viewport like a laptop's; fails the
    test if the page broke its own Content-Security-Policy or threw."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield page
    context.close()
    assert problems == []


def chat(stack: RunningStack, token: str, prompt: str) -> None:
    status, body, _ = stack.request(
        "POST", "/bedrock/chat", token, {"prompt": prompt, "max_tokens": 8}
    )
    assert status == 200, body


def get(stack: RunningStack, path: str, token: str) -> Any:
    status, body, _ = stack.request("GET", path, token)
    assert status == 200, body
    return body


@pytest.fixture(scope="module")
def tenants(local_stack: RunningStack) -> Tenants:
    run = uuid.uuid4().hex[:8]
    a, b = f"dash-a-{run}", f"dash-b-{run}"
    a_user, b_user, admin_user = f"da-{run}", f"db-{run}", f"dadmin-{run}"
    a_token = local_stack.create_user(a, a_user)
    b_token = local_stack.create_user(b, b_user)
    admin_token = local_stack.create_user(f"provider-{run}", admin_user, admin=True)
    chat(local_stack, a_token, "Say hi.")
    chat(local_stack, a_token, "Say hello.")
    for _ in range(3):
        chat(local_stack, b_token, "Say bye.")
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:  # until the job loop has curated every call
        counts = [get(local_stack, "/usage", t)["totals"]["requests"] for t in (a_token, b_token)]
        if counts == [2, 3]:
            break
        time.sleep(1)
    assert counts == [2, 3]
    return Tenants(a, a_user, a_token, b, b_user, b_token, admin_user, admin_token)


def dashboard_url(stack: RunningStack, suffix: str = "") -> str:
    return stack.outputs["ApiGatewayUrl"].rstrip("/") + "/dashboard" + suffix


def sign_in(page: Page, username: str, password: str = PASSWORD) -> None:
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#sign-in-button")


def shown_totals(page: Page) -> dict[str, str]:
    """The totals the page shows: each card's value as the API gave it, and its text."""
    found = {"cost_usd": page.get_attribute("#total-cost", "data-value") or ""}
    for name in TOTALS:
        found[name] = page.get_attribute(f"#total-{name.replace('_', '-')}", "data-value") or ""
    return found


def api_totals(report: dict[str, Any]) -> dict[str, str]:
    return {name: str(report["totals"][name]) for name in (*TOTALS, "cost_usd")}


def wait_for_tenant(page: Page, tenant: str) -> None:
    # Locator waits: a string predicate (wait_for_function) would be eval'd, which the page's
    # Content-Security-Policy forbids, as it should.
    expect(page.locator("#tenant-name")).to_have_text(tenant)
    page.locator("#cost-chart rect").first.wait_for()


def test_sign_in_shows_the_chart_with_the_totals_of_get_usage_then_sign_out(
    page: Page, local_stack: RunningStack, tenants: Tenants
) -> None:
    started = time.monotonic()
    page.goto(dashboard_url(local_stack))
    sign_in(page, tenants.a_user)
    wait_for_tenant(page, tenants.a)

    first, last = page.input_value("#from"), page.input_value("#to")
    report = get(local_stack, f"/usage?from={first}&to={last}", tenants.a_token)
    assert shown_totals(page) == api_totals(report)
    assert page.inner_text("#total-cost") == "$" + report["totals"]["cost_usd"]
    assert page.inner_text("#total-requests") == "2"
    # One bar segment per day and model with usage, each model in the legend and the table.
    (model,) = [m["model_id"] for m in report["models"]]
    assert page.locator("#cost-chart rect").count() == len(report["days"])
    assert page.inner_text("#legend") == model
    assert page.locator("#models-table tbody tr").count() == 1
    plan = get(local_stack, "/usage/plan", tenants.a_token)
    assert page.get_attribute("#budget-text", "data-spent") == plan["month_to_date"]["spent_usd"]
    assert page.get_attribute("#budget-text", "data-budget") == plan["plan"]["monthly_budget_usd"]
    assert page.is_hidden("#tenant-picker")
    # The token lives in the page's memory only.
    kept = page.evaluate(
        "[localStorage.length, sessionStorage.length, document.cookie, indexedDB !== undefined]"
    )
    assert kept[:3] == [0, 0, ""]
    assert page.context.cookies() == []

    page.click("#sign-out")
    assert page.is_visible("#sign-in-form")
    assert page.is_hidden("#dashboard-view")
    assert shown_totals(page)["requests"] == ""  # the numbers are gone, not just hidden
    assert page.inner_text("#total-requests") == ""
    assert page.input_value("#password") == ""
    print(f"\nbrowser sign-in to chart and sign-out: {time.monotonic() - started:.2f} s")


def test_a_wrong_password_shows_an_error_and_no_data(
    page: Page, local_stack: RunningStack, tenants: Tenants
) -> None:
    page.goto(dashboard_url(local_stack))
    sign_in(page, tenants.a_user, "Wrong-passw0rd!")
    page.wait_for_selector("#sign-in-message:not([hidden])")
    assert page.inner_text("#sign-in-message") == "Incorrect username or password."
    assert page.is_hidden("#dashboard-view")
    assert page.input_value("#password") == ""


def expired(token: str) -> str:
    """The same ID token as the local pool would have issued it two hours ago: signed with
    the pool's own key (moto's), so only its expiry is wrong."""
    from moto.utilities.utils import load_resource

    claims = jwt.decode(token, options={"verify_signature": False})
    issued = int(time.time()) - 7200
    claims.update(iat=issued, auth_time=issued, exp=issued + 3600)
    key = jwt.PyJWK(load_resource("cognitoidp/resources/jwks-private.json")).key
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "dummy"})


def test_an_expired_token_sends_the_user_back_to_sign_in(
    page: Page, local_stack: RunningStack, tenants: Tenants
) -> None:
    page.goto(dashboard_url(local_stack))
    sign_in(page, tenants.a_user)
    wait_for_tenant(page, tenants.a)
    seen: list[int] = []

    def with_expired_token(route: Route, request: Request) -> None:
        # An hour later, as far as the API can tell: the page still sends the token it holds.
        bearer = request.headers["authorization"].removeprefix("Bearer ")
        route.continue_(headers={**request.headers, "authorization": f"Bearer {expired(bearer)}"})

    page.route("**/usage?*", with_expired_token)
    page.on(
        "response",
        lambda response: seen.append(response.status) if "/usage" in response.url else None,
    )
    page.click("#show")
    page.wait_for_selector("#sign-in-form", state="visible")
    assert 401 in seen
    assert page.inner_text("#sign-in-message") == "Your session has expired. Please sign in again."
    assert page.is_hidden("#dashboard-view")
    assert page.inner_text("#total-requests") == ""


def test_an_admin_sees_every_tenant_and_switches_between_them(
    page: Page, local_stack: RunningStack, tenants: Tenants
) -> None:
    page.goto(dashboard_url(local_stack))
    sign_in(page, tenants.admin_user)
    page.wait_for_selector("#tenant-picker:not([hidden])")
    page.locator("#cost-chart rect").first.wait_for()
    options = page.eval_on_selector_all("#tenant-select option", "els => els.map(e => e.value)")
    assert {tenants.a, tenants.b} <= set(options)
    page.select_option("#tenant-select", tenants.b)
    wait_for_tenant(page, tenants.b)
    first, last = page.input_value("#from"), page.input_value("#to")
    report = get(local_stack, f"/usage?from={first}&to={last}", tenants.b_token)
    assert shown_totals(page) == api_totals(report)
    assert page.inner_text("#total-requests") == "3"


def test_a_tenant_user_cannot_see_another_tenant_through_the_page_or_its_endpoints(
    page: Page, local_stack: RunningStack, tenants: Tenants
) -> None:
    other = tenants.b
    # The page takes no tenant from its URL...
    page.goto(dashboard_url(local_stack, f"?tenant_id={other}&tenant={other}#tenant={other}"))
    sign_in(page, tenants.a_user)
    wait_for_tenant(page, tenants.a)
    assert shown_totals(page)["requests"] == "2"
    assert page.is_hidden("#tenant-picker")
    assert other not in page.content()

    # ...and the endpoints it calls give this user nothing of another tenant, whatever the
    # parameters, even when called from the page's own origin with the user's token.
    paths = [
        f"usage?tenant_id={other}",
        f"usage?tenant_id={other}&from=2000-01-01&to=2000-12-31",
        f"usage/plan?tenant_id={other}",
        "admin/usage",
        f"admin/usage?tenant_id={other}",
        f"admin/tenants/{other}/usage",
        f"admin/tenants/{other}/plan",
    ]
    answers = page.evaluate(
        """async ([paths, token]) => Promise.all(paths.map(async (path) => {
            const response = await fetch(path, {headers: {Authorization: "Bearer " + token}});
            return [path, response.status, await response.text()];
        }))""",
        [paths, tenants.a_token],
    )
    for path, status, body in answers:
        assert other not in body, path
        if path.startswith("admin/"):
            assert status == 403, path
        else:
            assert status == 200, path
            assert json.loads(body)["tenant_id"] == tenants.a, path
