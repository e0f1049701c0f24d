"""GET /dashboard: public, self-contained, locked down by its headers, holding no secret."""

from __future__ import annotations

import base64
import hashlib
import json
import re

from chalice.test import Client

from chalicelib.dashboard.page import render
from tests.functional.conftest import make_settings
from tests.support.tokens import CLIENT_ID


def csp(response: object) -> dict[str, str]:
    header = response.headers["Content-Security-Policy"]  # type: ignore[attr-defined]
    return {
        part.split(" ", 1)[0]: part.split(" ", 1)[1] if " " in part else ""
        for part in (p.strip() for p in header.split(";"))
    }


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_page_is_public_html_with_the_stages_sign_in_settings(client: Client) -> None:
    response = client.http.get("/dashboard")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    html = response.body.decode()
    (config,) = re.findall(
        r'<script type="application/json" id="dashboard-config">(.*?)</script>', html
    )
    assert json.loads(config) == {
        "region": "us-east-1",
        "clientId": CLIENT_ID,
        "cognitoEndpoint": "https://cognito-idp.us-east-1.amazonaws.com/",
        "adminGroup": "admins",
        "stage": "test",
    }


def test_only_the_pages_own_script_and_style_may_run_and_only_api_and_cognito_are_reached(
    client: Client,
) -> None:
    response = client.http.get("/dashboard")
    html = response.body.decode()
    policy = csp(response)
    (script,) = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", html, flags=re.DOTALL)
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == sha256(script)  # no 'unsafe-inline', no other source
    assert policy["style-src"] == sha256(style)
    assert policy["connect-src"] == "'self' https://cognito-idp.us-east-1.amazonaws.com"
    assert policy["frame-ancestors"] == "'none'"
    assert (policy["base-uri"], policy["form-action"]) == ("'none'", "'none'")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert " style=" not in html  # inline style attributes would need 'unsafe-inline'
    assert not re.search(r"\son[a-z]+=", html)  # nor inline event handlers


def test_the_page_holds_no_secret_and_keeps_tokens_out_of_storage(client: Client) -> None:
    html = client.http.get("/dashboard").body.decode()
    for forbidden in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
        assert forbidden not in html
    assert "secret" not in html.lower()
    assert "RefreshToken" not in html  # only the ID token is taken from the sign-in answer


def test_locally_the_browser_signs_in_at_the_local_endpoint() -> None:
    settings = make_settings(AWS_ENDPOINT_URL="http://127.0.0.1:4566")
    page = render(settings)
    assert '"cognitoEndpoint":"http://127.0.0.1:4566"' in page.html
    assert "connect-src 'self' http://127.0.0.1:4566;" in str(
        page.headers["Content-Security-Policy"]
    )


def test_settings_cannot_break_out_of_the_config_element() -> None:
    settings = make_settings(USER_POOL_CLIENT_ID="</script><script>alert(1)</script>")
    html = render(settings).html
    assert html.count("</script>") == 2  # the config element's and the script's own
    assert "\\u003c/script\\u003e" in html


def test_the_page_needs_no_token_but_the_data_does(client: Client) -> None:
    assert client.http.get("/dashboard").status_code == 200
    assert (
        client.http.get("/dashboard", headers={"Authorization": "Bearer junk"}).status_code == 200
    )
    assert client.http.get("/usage").status_code == 401
