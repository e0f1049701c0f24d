"""The dashboard page: its HTML with the stage's sign-in settings, and the headers it needs."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from chalicelib.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
# Cognito's API, called by the browser for USER_PASSWORD_AUTH (the same flow as the CLI).
COGNITO_ENDPOINT = "https://cognito-idp.{region}.amazonaws.com/"


@dataclass(frozen=True)
class Page:
    """A rendered page: body and response headers."""

    html: str
    headers: dict[str, str | list[str]]


@functools.cache
def _sources() -> tuple[str, str, str]:
    """The page's template, script and style, read once per process."""
    return tuple(  # type: ignore[return-value]
        (STATIC / name).read_text(encoding="utf-8")
        for name in ("dashboard.html", "dashboard.js", "dashboard.css")
    )


def _hash_source(text: str) -> str:
    """A CSP hash source for an inline element's exact text."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _json_for_html(value: object) -> str:
    """JSON that cannot close the <script> element it sits in, whatever the values hold."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def cognito_endpoint(settings: Settings) -> str:
    """Where the browser signs in: Cognito in the stage's region, or the local endpoint."""
    return settings.aws_endpoint_url or COGNITO_ENDPOINT.format(region=settings.region)


def render(settings: Settings) -> Page:
    """The page for this stage. It holds no secret: the app client has none (a public client,
    as the CLI uses), and the region, client id and endpoint are what any sign-in needs.

    The script and style are inline, allowed by their hashes in the Content-Security-Policy,
    so no inline script other than these runs, and the page talks only to its own origin (the
    API) and Cognito. Tokens stay in the script's memory: no storage, no cookies.
    """
    template, script, style = _sources()
    endpoint = cognito_endpoint(settings)
    config = {
        "region": settings.region,
        "clientId": settings.user_pool_client_id,
        "cognitoEndpoint": endpoint,
        "adminGroup": settings.admin_group,
        "stage": settings.stage,
    }
    html = (
        template.replace("{{style}}", style)
        .replace("{{config}}", _json_for_html(config))
        .replace("{{script}}", script)
    )
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_hash_source(script)}",
            f"style-src {_hash_source(style)}",
            f"connect-src 'self' {_origin(endpoint)}",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    headers: dict[str, str | list[str]] = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
        "Strict-Transport-Security": "max-age=31536000",
        # Small, and it carries the stage's settings: fetched fresh each time.
        "Cache-Control": "no-store",
    }
    return Page(html, headers)
