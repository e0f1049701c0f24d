"""Per-tenant request rates on the API's query endpoints (GET /usage and friends).

Each GET /usage runs Athena queries, billed by the bytes they scan; without a limit one tenant
could run up query cost for everyone. A fixed one-minute window per tenant and scope, counted
by one conditional DynamoDB write per request: over the limit is 429 with Retry-After until the
next minute. If the counter cannot be written, the request is let through (logged): the
Athena workgroup's bytes-scanned cutoff still bounds what any one query can cost.
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol

from chalicelib.errors import MeteringError, RateLimitedError

logger = logging.getLogger(__name__)

WINDOW_FORMAT = "%Y-%m-%dT%H:%M"
USAGE_QUERIES = "usage"  # GET /usage, GET /usage/plan, GET /admin/usage share this scope


class RequestLimiterUnavailableError(MeteringError):
    """The rate counter could not be written."""


class RequestLimiter(Protocol):
    """Atomic per-tenant, per-scope counters of one-minute windows."""

    def admit(self, tenant_id: str, scope: str, window: str, limit: int) -> bool:
        """Count one request in the window if fewer than `limit` are counted; else False."""
        ...


def window_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime(WINDOW_FORMAT)


def seconds_to_next_window(now: datetime) -> int:
    utc = now.astimezone(UTC)
    boundary = utc.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return max(1, math.ceil((boundary - utc).total_seconds()))


def check_rate(
    limiter: RequestLimiter, tenant_id: str, scope: str, limit: int, now: datetime
) -> None:
    """Admit the request or raise RateLimitedError (429) saying when to retry."""
    try:
        admitted = limiter.admit(tenant_id, scope, window_of(now), limit)
    except RequestLimiterUnavailableError:
        logger.warning("request rate not counted; request let through", extra={"scope": scope})
        return
    if not admitted:
        wait = seconds_to_next_window(now)
        raise RateLimitedError(
            f"Rate limit reached: at most {limit} usage queries per minute per tenant. "
            f"Retry in {wait} s.",
            wait,
            error_code="UsageRateLimited",
        )


class InMemoryRequestLimiter:
    """A thread-safe RequestLimiter, for tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str, str], int] = {}

    def admit(self, tenant_id: str, scope: str, window: str, limit: int) -> bool:
        with self._lock:
            key = (tenant_id, scope, window)
            if self.counts.get(key, 0) >= limit:
                return False
            self.counts[key] = self.counts.get(key, 0) + 1
            return True
