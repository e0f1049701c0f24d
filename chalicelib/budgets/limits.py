"""Budget and rate-limit arithmetic: windows, worst-case demand, refusals, alert thresholds.

Pure: no AWS, no clock of its own. Amounts are Decimal USD, token counts are ints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from chalicelib.conversation import Conversation
from chalicelib.pricing import TOKENS_PER_PRICE_UNIT, ModelPrice
from chalicelib.usage import NO_TOKENS, TokenUsage

# Tokens a chat template may add around the prompt (role markers, a default system prompt).
# SmolLM2's template adds about 30; Claude's Messages framing adds fewer.
PROMPT_OVERHEAD_TOKENS = 64
# Tokens the template adds for each further message of a conversation: its role markers and
# separators (5 for SmolLM2's ChatML and Llama 3's headers, fewer for Claude's framing).
TURN_OVERHEAD_TOKENS = 8
# At most this many reservations open at once per tenant. Each lives on the tenant's month
# item (about 150 bytes), which keeps that item far below DynamoDB's 400 KB item limit and
# its write cost (1 WCU per KB) small.
MAX_OPEN_RESERVATIONS = 200
# Percentages of the monthly budget that raise one alert each per tenant per month.
ALERT_THRESHOLDS: tuple[int, ...] = (50, 80, 100)

# Money counters are stored as whole pico-dollars (1e-12 USD). Every price in the table has at
# most 6 decimals per million tokens (checked when the table loads), so every cost, worst case
# and budget is a whole number of them: integer ADDs in DynamoDB stay exact.
PICO_PER_USD = Decimal(10) ** 12

MONTH_FORMAT = "%Y-%m"
WINDOW_FORMAT = "%Y-%m-%dT%H:%M"

RefusalKind = Literal["budget", "requests_per_minute", "tokens_per_minute", "in_flight"]


@dataclass(frozen=True)
class Limits:
    """The parts of a plan the counters are checked against."""

    monthly_budget_usd: Decimal
    tokens_per_minute: int
    requests_per_minute: int


@dataclass(frozen=True)
class Demand:
    """The most one request can consume: tokens for the rate limit, USD for the budget."""

    tokens: int
    usd: Decimal


@dataclass(frozen=True)
class Reservation:
    """Budget and rate capacity held for one request until it is settled or released.

    The id is the request's usage event id, so a reservation left behind can be matched
    with the event that bills it.
    """

    tenant_id: str
    month: str
    reservation_id: str
    usd: Decimal
    tokens: int
    window: str
    expires_at: int  # epoch seconds; after this the repair job may settle or release it
    event_timestamp: str  # the usage event's timestamp (ISO-8601, Z), to find it later


@dataclass(frozen=True)
class Actual:
    """What a settled request really used."""

    usd: Decimal
    tokens: TokenUsage = NO_TOKENS


@dataclass(frozen=True)
class MonthCounters:
    """A tenant's month-to-date counters, the current rate window and what is in flight.

    `committed_usd` is settled spend plus open reservations: the number the budget check uses.
    """

    tenant_id: str
    month: str
    committed_usd: Decimal = Decimal(0)
    reserved_usd: Decimal = Decimal(0)
    settled_usd: Decimal = Decimal(0)
    open_reservations: int = 0
    requests: int = 0
    tokens: TokenUsage = NO_TOKENS  # settled requests' tokens, month to date
    rate_window: str | None = None
    rate_requests: int = 0
    rate_tokens: int = 0
    reservations: tuple[Reservation, ...] = ()
    alerts: Mapping[int, str] = field(default_factory=dict)
    indexed: bool = False
    # Calls given up at their deadline (504): not billed, but the model may have run on. Their
    # reservations' worst cases add up here: the provider's exposure, shown to admins.
    aborted_usd: Decimal = Decimal(0)
    aborted_requests: int = 0

    def remaining_usd(self, budget: Decimal) -> Decimal:
        """Budget not yet spent or held by requests in flight (never negative)."""
        return max(Decimal(0), budget - self.committed_usd)

    def window_usage(self, window: str) -> tuple[int, int]:
        """(requests, tokens) counted in `window`; zero if the item holds an older window."""
        if self.rate_window is None or self.rate_window < window:
            return 0, 0
        return self.rate_requests, self.rate_tokens


@dataclass(frozen=True)
class Refusal:
    """Why a reservation was refused, and when trying again can help."""

    kind: RefusalKind
    retry_after_s: int


def to_pico(usd: Decimal) -> int:
    """USD as whole pico-dollars; ValueError if it is not a whole number of them."""
    scaled = usd * PICO_PER_USD
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{usd} USD is not a whole number of pico-dollars")
    return int(scaled)


def from_pico(pico: int) -> Decimal:
    """Whole pico-dollars as USD."""
    return Decimal(pico).scaleb(-12)


def month_key(now: datetime) -> str:
    """The UTC calendar month of `now` ("2026-11"): the key of its counters."""
    return now.astimezone(UTC).strftime(MONTH_FORMAT)


def previous_month_key(now: datetime) -> str:
    """The UTC month before `now`'s."""
    first = month_start(now)
    return (first - timedelta(days=1)).strftime(MONTH_FORMAT)


def month_start(now: datetime) -> datetime:
    """Midnight UTC on the first day of `now`'s month."""
    utc = now.astimezone(UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime) -> datetime:
    """Midnight UTC on the first day of the month after `now`'s."""
    first = month_start(now)
    return (first + timedelta(days=32)).replace(day=1)


def window_key(now: datetime) -> str:
    """The UTC minute of `now` ("2026-11-27T15:16"): one rate-limit window."""
    return now.astimezone(UTC).strftime(WINDOW_FORMAT)


def seconds_to_next_minute(now: datetime) -> int:
    """Whole seconds until the next rate window opens (at least 1)."""
    utc = now.astimezone(UTC)
    boundary = utc.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return max(1, math.ceil((boundary - utc).total_seconds()))


def seconds_to_next_month(now: datetime) -> int:
    """Whole seconds until the next month's budget starts (at least 1)."""
    return max(1, math.ceil((next_month_start(now) - now.astimezone(UTC)).total_seconds()))


def estimate_input_tokens(conversation: Conversation) -> int:
    """An upper bound on the input tokens a conversation is billed for: every message and
    the system text.

    Byte-level BPE tokenizers (Claude's, Llama 3's, SmolLM2's) never produce more tokens than
    the text has UTF-8 bytes, so bytes plus the chat template's overhead (PROMPT_OVERHEAD_TOKENS,
    and TURN_OVERHEAD_TOKENS per message after the first) cannot undercount. English text runs
    about 4 bytes per token, so this over-reserves input roughly 4x; input is the cheap side
    of a call, and the reservation is settled to the real count afterwards.
    """
    turns = len(conversation.messages) - 1
    return conversation.utf8_bytes() + PROMPT_OVERHEAD_TOKENS + TURN_OVERHEAD_TOKENS * turns


def worst_case(conversation: Conversation, max_tokens: int, price: ModelPrice) -> Demand:
    """The most a call can cost: the input estimate at the input price, max_tokens at output.

    Cache tokens are not priced here: the chat path sets no cache points, so Bedrock reports
    none.
    """
    input_tokens = estimate_input_tokens(conversation)
    usd = (input_tokens * price.input + max_tokens * price.output) / TOKENS_PER_PRICE_UNIT
    return Demand(tokens=input_tokens + max_tokens, usd=usd)


def refusal(
    counters: MonthCounters, limits: Limits, demand: Demand, window: str, now: datetime
) -> Refusal | None:
    """Why `demand` may not be reserved on top of `counters` now, or None if it fits.

    The DynamoDB adapter's condition expressions state the same rules, except where no counter
    exists yet: a month's first reservation is not checked against the budget, nor a window's
    first against the rates. This is also how the adapter explains a failed condition from
    the item it read back.
    """
    if counters.committed_usd + demand.usd > limits.monthly_budget_usd:
        return Refusal("budget", seconds_to_next_month(now))
    if counters.open_reservations >= MAX_OPEN_RESERVATIONS:
        return Refusal("in_flight", 1)
    # A window newer than ours (another instance's clock runs ahead) is the current one.
    current = max(window, counters.rate_window or window)
    requests, tokens = counters.window_usage(current)
    if requests >= limits.requests_per_minute:
        return Refusal("requests_per_minute", seconds_to_next_minute(now))
    if tokens + demand.tokens > limits.tokens_per_minute:
        return Refusal("tokens_per_minute", seconds_to_next_minute(now))
    return None


def threshold_usd(budget: Decimal, percent: int) -> Decimal:
    """The spend at which `percent` of the budget is reached (exact)."""
    return budget * percent / 100


def thresholds_crossed(before: Decimal, after: Decimal, budget: Decimal) -> tuple[int, ...]:
    """Thresholds that settled spend reached by going from `before` to `after`.

    Settles on one item are serialized, so their (before, after] intervals never overlap:
    each crossing is seen by exactly one settle.
    """
    if budget <= 0:
        return ()
    return tuple(
        percent for percent in ALERT_THRESHOLDS if before < threshold_usd(budget, percent) <= after
    )


def thresholds_reached(spent: Decimal, budget: Decimal) -> tuple[int, ...]:
    """Every threshold that settled spend `spent` has reached."""
    if budget <= 0:
        return ()
    return tuple(p for p in ALERT_THRESHOLDS if spent >= threshold_usd(budget, p))
