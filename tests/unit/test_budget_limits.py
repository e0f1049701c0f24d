"""Budget arithmetic: windows, Retry-After, the worst-case estimate, refusals, thresholds."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from chalicelib.budgets.limits import (
    MAX_OPEN_RESERVATIONS,
    Demand,
    Limits,
    MonthCounters,
    estimate_input_tokens,
    from_pico,
    month_key,
    next_month_start,
    previous_month_key,
    refusal,
    seconds_to_next_minute,
    seconds_to_next_month,
    thresholds_crossed,
    thresholds_reached,
    to_pico,
    window_key,
    worst_case,
)
from chalicelib.conversation import Conversation, Message
from chalicelib.pricing import ModelPrice

NOW = datetime(2026, 11, 14, 12, 0, 5, tzinfo=UTC)
LIMITS = Limits(Decimal("1.00"), tokens_per_minute=1000, requests_per_minute=3)
SMALL = Demand(tokens=100, usd=Decimal("0.10"))
HAIKU = ModelPrice(Decimal("0.25"), Decimal("1.25"), Decimal("0.03"), Decimal("0.30"))


def counters(**fields: object) -> MonthCounters:
    return MonthCounters("t", "2026-11", **fields)  # type: ignore[arg-type]


def test_keys_are_utc_month_and_minute() -> None:
    assert month_key(NOW) == "2026-11"
    assert window_key(NOW) == "2026-11-14T12:00"
    assert previous_month_key(datetime(2026, 1, 3, tzinfo=UTC)) == "2025-12"
    assert next_month_start(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


def test_retry_after_is_seconds_to_the_next_window_or_month() -> None:
    assert seconds_to_next_minute(NOW) == 55
    assert seconds_to_next_minute(NOW.replace(second=59, microsecond=500_000)) == 1
    assert seconds_to_next_month(datetime(2026, 11, 30, 23, 59, 30, tzinfo=UTC)) == 30


@pytest.mark.parametrize(
    "prompt", ["hi", "Please explain about AWS Lambda.", "日本語のテキスト" * 40, "€" * 300]
)
def test_input_estimate_never_undercounts_byte_level_tokenizers(prompt: str) -> None:
    # A byte-level BPE token covers at least one UTF-8 byte.
    assert estimate_input_tokens(Conversation.from_prompt(prompt)) >= len(prompt.encode()) + 30


def test_input_estimate_counts_every_message_and_the_system_text() -> None:
    conversation = Conversation(
        (Message("user", "Hi."), Message("assistant", "Hello!"), Message("user", "Ça va ?")),
        "Be brief.",
    )
    text_bytes = len(b"Hi.") + len(b"Hello!") + len("Ça va ?".encode()) + len(b"Be brief.")
    # The template's overhead once, and the role markers of each message after the first.
    assert estimate_input_tokens(conversation) == text_bytes + 64 + 2 * 8


def test_worst_case_prices_estimate_as_input_and_max_tokens_as_output() -> None:
    demand = worst_case(Conversation.from_prompt("hi"), 64, HAIKU)
    assert demand.tokens == 66 + 64
    assert demand.usd == Decimal("0.0000965")  # 66 * 0.25/1M + 64 * 1.25/1M


def test_pico_dollars_round_trip_exactly() -> None:
    assert to_pico(Decimal("0.0000965")) == 96_500_000
    assert from_pico(96_500_000) == Decimal("0.0000965")
    with pytest.raises(ValueError, match="pico"):
        to_pico(Decimal("1E-13"))


def test_demand_that_fits_is_not_refused() -> None:
    assert refusal(counters(committed_usd=Decimal("0.90")), LIMITS, SMALL, "w", NOW) is None


def test_budget_refusal_counts_reservations_in_flight() -> None:
    over = counters(committed_usd=Decimal("0.91"), settled_usd=Decimal("0.50"))
    refused = refusal(over, LIMITS, SMALL, "w", NOW)
    assert refused is not None
    assert refused.kind == "budget"
    assert refused.retry_after_s == seconds_to_next_month(NOW)


def test_requests_per_minute_count_only_the_current_window() -> None:
    busy = counters(rate_window="2026-11-14T12:00", rate_requests=3)
    assert refusal(busy, LIMITS, SMALL, "2026-11-14T12:00", NOW).kind == "requests_per_minute"  # type: ignore[union-attr]
    assert refusal(busy, LIMITS, SMALL, "2026-11-14T12:01", NOW) is None


def test_a_newer_window_on_the_item_counts_as_current() -> None:
    ahead = counters(rate_window="2026-11-14T12:01", rate_requests=3)
    assert refusal(ahead, LIMITS, SMALL, "2026-11-14T12:00", NOW) is not None


def test_tokens_per_minute_include_the_new_demand() -> None:
    window = "2026-11-14T12:00"
    assert (
        refusal(counters(rate_window=window, rate_tokens=900), LIMITS, SMALL, window, NOW) is None
    )
    refused = refusal(counters(rate_window=window, rate_tokens=901), LIMITS, SMALL, window, NOW)
    assert refused is not None
    assert (refused.kind, refused.retry_after_s) == ("tokens_per_minute", 55)


def test_too_many_open_reservations_is_refused() -> None:
    full = counters(open_reservations=MAX_OPEN_RESERVATIONS)
    assert refusal(full, LIMITS, SMALL, "w", NOW).kind == "in_flight"  # type: ignore[union-attr]


def test_remaining_budget_never_goes_negative() -> None:
    assert counters(committed_usd=Decimal(2)).remaining_usd(Decimal(1)) == 0


@pytest.mark.parametrize(
    ("before", "after", "crossed"),
    [
        ("0", "0.49", ()),
        ("0.49", "0.50", (50,)),
        ("0.50", "0.79", ()),
        ("0.40", "0.85", (50, 80)),
        ("0.10", "1.00", (50, 80, 100)),
        ("1.00", "1.20", ()),
    ],
)
def test_thresholds_are_crossed_once_on_the_way_up(
    before: str, after: str, crossed: tuple[int, ...]
) -> None:
    assert thresholds_crossed(Decimal(before), Decimal(after), Decimal(1)) == crossed


def test_zero_budget_has_no_thresholds() -> None:
    assert thresholds_crossed(Decimal(0), Decimal(1), Decimal(0)) == ()
    assert thresholds_reached(Decimal(1), Decimal(0)) == ()


def test_thresholds_reached_lists_every_one_at_or_below_spend() -> None:
    assert thresholds_reached(Decimal("0.80"), Decimal(1)) == (50, 80)
