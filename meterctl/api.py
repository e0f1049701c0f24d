"""Calls to the metering API over HTTP, as a tenant would make them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from meterctl.target import CliError, Target


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any
    headers: dict[str, str]


def call(
    target: Target,
    method: str,
    path: str,
    token: str,
    *,
    body: Any = None,
    timeout_s: float = 120,
) -> ApiResponse:
    """One authenticated request; raises CliError for transport problems, not HTTP errors."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (the URL comes from the operator's outputs)
        target.api_url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return ApiResponse(response.status, _json(response.read()), dict(response.headers))
    except urllib.error.HTTPError as exc:
        return ApiResponse(exc.code, _json(exc.read()), dict(exc.headers))
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        hint = " Is the local stack running (`make run`)?" if target.endpoint_url else ""
        raise CliError(f"Cannot reach the API at {target.api_url}: {exc}.{hint}") from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def require_ok(response: ApiResponse) -> Any:
    """The body of a 2xx response; otherwise a CliError carrying the API's message."""
    if 200 <= response.status < 300:
        return response.body
    message = response.body.get("Message") if isinstance(response.body, dict) else response.body
    retry = response.headers.get("Retry-After")
    suffix = f" (retry after {retry} s)" if retry else ""
    raise CliError(f"HTTP {response.status}: {message}{suffix}")
