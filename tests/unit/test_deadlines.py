"""Deadlines: the time a call has, how its stages share it, and max_tokens that fit."""

from __future__ import annotations

import pytest

from chalicelib.deadlines import (
    ANSWER_MARGIN_S,
    DYNAMODB_TIMEOUTS,
    FIREHOSE_TIMEOUTS,
    PLANNING_OUTPUT_TOKENS_PER_S,
    RECORD_RESERVE_S,
    S3_FALLBACK_TIMEOUTS,
    Deadline,
    MaxTokensPolicy,
    max_tokens_within,
    model_window_s,
)
from chalicelib.pricing import load_price_table


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_deadline_is_the_stage_budget_or_what_lambda_has_left_if_less() -> None:
    clock = Clock()
    assert Deadline.start(29, None, clock).at == 129
    assert Deadline.start(29, 12_000, clock).at == 112
    assert Deadline.start(29, 60_000, clock).at == 129


def test_the_model_gets_what_is_left_after_the_record_reserve_and_the_answer_margin() -> None:
    clock = Clock()
    deadline = Deadline.start(29, None, clock)
    assert deadline.answer_by == 129 - ANSWER_MARGIN_S
    assert deadline.model_by == 129 - ANSWER_MARGIN_S - RECORD_RESERVE_S
    clock.now += 10
    assert deadline.remaining() == 19
    assert deadline.seconds_until(deadline.model_by) == pytest.approx(19 - 0.5 - 4.6)


def test_the_record_reserve_covers_one_firehose_attempt_and_the_whole_fallback() -> None:
    reserve = FIREHOSE_TIMEOUTS.attempt_s + S3_FALLBACK_TIMEOUTS.worst_s
    assert pytest.approx(reserve) == RECORD_RESERVE_S
    assert pytest.approx(2 * 1.5 + 0.1) == S3_FALLBACK_TIMEOUTS.worst_s
    # A healthy settle beside the durable write takes milliseconds; even its first two
    # attempts timing out fit in the reserve (the answer does not wait longer than that).
    assert 2 * DYNAMODB_TIMEOUTS.attempt_s < RECORD_RESERVE_S


def test_max_tokens_limits_fit_the_window_at_planning_speed() -> None:
    assert model_window_s(29) == pytest.approx(21.9)
    haiku = "anthropic.claude-3-haiku-20240307-v1:0"
    assert max_tokens_within(haiku, 29) == 1664  # 21.9 s x 80 tokens/s, to a multiple of 128
    assert max_tokens_within("anthropic.claude-opus-4-20250514-v1:0", 29) == 384
    assert max_tokens_within("unknown.model", 29) == 384  # 20 tokens/s
    assert max_tokens_within(haiku, 5) == 128  # never below one step


def test_the_stages_max_tokens_limits_apply_with_each_models_own_cap() -> None:
    policy = MaxTokensPolicy(default=512, limit=1000, deadline_s=29)
    haiku, opus = "anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-opus-4-20250514-v1:0"
    assert (policy.limit_for(haiku), policy.default_for(haiku)) == (1000, 512)  # the stage's
    assert (policy.limit_for(opus), policy.default_for(opus)) == (384, 384)  # the model's


def test_every_priced_model_has_a_planning_speed() -> None:
    assert set(PLANNING_OUTPUT_TOKENS_PER_S) == set(load_price_table().model_ids)


def test_the_budget_counts_from_when_api_gateway_received_the_request() -> None:
    from types import SimpleNamespace

    from chalicelib.edge import request_deadline
    from chalicelib.settings import Settings

    settings = Settings.from_env({})
    received = SimpleNamespace(context={"requestTimeEpoch": 1_000_000_000_000})
    late = request_deadline(settings, None, received, wall_clock=lambda: 1_000_000_002.5)
    assert late.remaining() == pytest.approx(26.5, abs=0.05)

    lambda_context = SimpleNamespace(get_remaining_time_in_millis=lambda: 10_000)
    assert request_deadline(settings, lambda_context).remaining() == pytest.approx(10, abs=0.05)
    local = SimpleNamespace(context={})  # chalice local: no requestTimeEpoch
    assert request_deadline(settings, None, local).remaining() == pytest.approx(29, abs=0.05)
