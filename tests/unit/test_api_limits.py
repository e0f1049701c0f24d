"""Per-tenant rate windows on the usage queries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.api_limits import (
    InMemoryRequestLimiter,
    RequestLimiterUnavailableError,
    check_rate,
)
from chalicelib.errors import RateLimitedError

NOW = datetime(2026, 11, 30, 12, 5, 20, tzinfo=UTC)


def test_requests_past_the_limit_wait_for_the_next_minute() -> None:
    limiter = InMemoryRequestLimiter()
    for _ in range(3):
        check_rate(limiter, "t", "usage", 3, NOW)
    with pytest.raises(RateLimitedError) as refused:
        check_rate(limiter, "t", "usage", 3, NOW)
    assert (refused.value.retry_after_s, refused.value.error_code) == (40, "UsageRateLimited")
    check_rate(limiter, "other-tenant", "usage", 3, NOW)
    check_rate(limiter, "t", "usage", 3, NOW.replace(minute=6))


def test_an_unavailable_counter_lets_the_request_through() -> None:
    class Down:
        def admit(self, tenant_id: str, scope: str, window: str, limit: int) -> bool:
            raise RequestLimiterUnavailableError("down")

    check_rate(Down(), "t", "usage", 1, NOW)
