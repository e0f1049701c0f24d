"""Plan validation names the field at fault; models are checked against the price table."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from chalicelib.budgets.plans import (
    Plan,
    default_plan,
    model_allowed,
    money_text,
    parse_plan,
    parse_plan_body,
    plan_document,
)
from chalicelib.errors import ConfigurationError, InvalidRequestError
from chalicelib.pricing import load_price_table
from chalicelib.settings import DEFAULT_MODEL_ID

PRICES = load_price_table()
VALID: dict[str, Any] = {
    "monthly_budget_usd": "12.34",
    "tokens_per_minute": 5000,
    "requests_per_minute": 10,
    "allowed_models": [DEFAULT_MODEL_ID],
}


def test_valid_plan_round_trips() -> None:
    plan = parse_plan(VALID, PRICES, DEFAULT_MODEL_ID)
    assert plan == Plan(Decimal("12.34"), 5000, 10, (DEFAULT_MODEL_ID,))
    assert plan_document(plan) == VALID


def test_budget_keeps_its_exact_value() -> None:
    plan = parse_plan({**VALID, "monthly_budget_usd": "0.000001"}, PRICES, DEFAULT_MODEL_ID)
    assert plan.monthly_budget_usd == Decimal("0.000001")


def test_zero_budget_is_allowed() -> None:
    plan = parse_plan({**VALID, "monthly_budget_usd": "0"}, PRICES, DEFAULT_MODEL_ID)
    assert plan.monthly_budget_usd == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"monthly_budget_usd": "-0.01"}, "monthly_budget_usd"),
        ({"monthly_budget_usd": "1e400"}, "monthly_budget_usd"),
        ({"monthly_budget_usd": "Infinity"}, "monthly_budget_usd"),
        ({"monthly_budget_usd": 5}, "monthly_budget_usd"),
        ({"monthly_budget_usd": "1.0000001"}, "monthly_budget_usd"),
        ({"tokens_per_minute": 10**10}, "tokens_per_minute"),
        ({"requests_per_minute": -1}, "requests_per_minute"),
        ({"allowed_models": [DEFAULT_MODEL_ID, 7]}, "allowed_models"),
        ({"allowed_models": ["meta.llama9-1t-v1:0"]}, "allowed_models"),
        ({"allowed_models": [" "]}, "allowed_models"),
    ],
)
def test_invalid_plans_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError, match=field):
        parse_plan({**VALID, **change}, PRICES, DEFAULT_MODEL_ID)


def test_body_must_be_a_json_object() -> None:
    with pytest.raises(InvalidRequestError, match="JSON"):
        parse_plan_body(b"{", PRICES, DEFAULT_MODEL_ID)
    with pytest.raises(InvalidRequestError, match="object"):
        parse_plan_body(b"[1]", PRICES, DEFAULT_MODEL_ID)


def test_duplicate_models_are_listed_once() -> None:
    plan = parse_plan(
        {**VALID, "allowed_models": [DEFAULT_MODEL_ID, DEFAULT_MODEL_ID]}, PRICES, DEFAULT_MODEL_ID
    )
    assert plan.allowed_models == (DEFAULT_MODEL_ID,)


def test_model_allowed_by_base_model_through_profiles() -> None:
    plan = Plan(Decimal(1), 1, 1, (DEFAULT_MODEL_ID,))
    assert model_allowed(plan, f"eu.{DEFAULT_MODEL_ID}", PRICES)
    assert not model_allowed(plan, "amazon.nova-pro-v1:0", PRICES)
    by_profile = Plan(Decimal(1), 1, 1, (f"us.{DEFAULT_MODEL_ID}",))
    assert model_allowed(by_profile, DEFAULT_MODEL_ID, PRICES)


def test_bad_stage_defaults_are_configuration_errors() -> None:
    assert default_plan("100", 1000, 10, DEFAULT_MODEL_ID).allowed_models == (DEFAULT_MODEL_ID,)
    with pytest.raises(ConfigurationError, match="DEFAULT_MONTHLY_BUDGET_USD"):
        default_plan("a lot", 1000, 10, DEFAULT_MODEL_ID)
    with pytest.raises(ConfigurationError, match="DEFAULT_REQUESTS_PER_MINUTE"):
        default_plan("100", 1000, 0, DEFAULT_MODEL_ID)


@pytest.mark.parametrize(
    ("amount", "text"), [("0", "0.00"), ("25.5", "25.50"), ("0.000009", "0.000009"), ("7", "7.00")]
)
def test_money_text_shows_at_least_cents(amount: str, text: str) -> None:
    assert money_text(Decimal(amount)) == text
