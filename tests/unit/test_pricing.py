"""Exact cost from the versioned price table; model ids resolve to base models."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chalicelib.pricing import (
    UnknownModelError,
    available_versions,
    base_model_id,
    format_usd,
    load_price_table,
    parse_usd,
)
from chalicelib.settings import DEFAULT_MODEL_ID
from chalicelib.usage import TokenUsage

HAIKU = DEFAULT_MODEL_ID


def test_default_model_cost_is_exact() -> None:
    table = load_price_table()
    cost = table.cost(HAIKU, TokenUsage(input_tokens=1000, output_tokens=500, total_tokens=1500))
    # 1000 * 0.25/1M + 500 * 1.25/1M
    assert cost.usd == Decimal("0.000875")
    assert cost.usd_text == "0.000875"
    assert cost.price_version == table.version


def test_cache_tokens_are_priced_not_free() -> None:
    table = load_price_table()
    cost = table.cost(
        HAIKU, TokenUsage(cache_read_input_tokens=1_000_000, cache_write_input_tokens=1_000_000)
    )
    assert cost.usd == Decimal("0.33")


def test_sums_of_many_small_costs_stay_exact() -> None:
    table = load_price_table()
    one = table.cost(HAIKU, TokenUsage(input_tokens=7, output_tokens=3)).usd
    assert sum([one] * 1_000_000, Decimal(0)) == Decimal("5.5")


@pytest.mark.parametrize(
    "model_id",
    [
        HAIKU,
        f"us.{HAIKU}",
        f"eu.{HAIKU}",
        f"apac.{HAIKU}",
        f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}",
        f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{HAIKU}",
    ],
)
def test_profiles_and_arns_resolve_to_the_base_model(model_id: str) -> None:
    assert base_model_id(model_id) == HAIKU
    assert load_price_table().price_of(model_id) == load_price_table().price_of(HAIKU)


def test_application_inference_profile_needs_a_mapping() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
    with pytest.raises(UnknownModelError, match="application inference profile"):
        load_price_table().price_of(arn)
    mapped = load_price_table().with_aliases({arn: f"us.{HAIKU}"})
    assert mapped.price_of(arn) == load_price_table().price_of(HAIKU)


def test_unknown_model_is_an_error_never_zero() -> None:
    with pytest.raises(UnknownModelError):
        load_price_table().cost("acme.unknown-model-v1:0", TokenUsage(input_tokens=1))


def test_every_published_table_names_date_and_source_for_each_price() -> None:
    import json

    from chalicelib.pricing import PRICES_DIR

    for version in available_versions():
        document = json.loads((PRICES_DIR / f"{version}.json").read_text())
        for model_id, row in document["models"].items():
            assert row["as_of"], model_id
            assert row["source"].startswith(("Amazon Bedrock", "Anthropic")), model_id
            for kind in ("input", "output", "cache_read", "cache_write"):
                assert Decimal(row[kind]) >= 0, (model_id, kind)


def test_table_covers_the_common_bedrock_text_models() -> None:
    ids = load_price_table().model_ids
    for expected in (
        HAIKU,
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
        "amazon.nova-micro-v1:0",
        "amazon.nova-lite-v1:0",
        "amazon.nova-pro-v1:0",
        "meta.llama3-1-8b-instruct-v1:0",
    ):
        assert expected in ids


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("0.00001325"), "0.00001325"),
        (Decimal("1E-8"), "0.00000001"),
        (Decimal("5.500"), "5.5"),
        (Decimal(0), "0"),
    ],
)
def test_usd_text_is_plain_fixed_point(amount: Decimal, text: str) -> None:
    assert format_usd(amount) == text


@pytest.mark.parametrize("bad", ["abc", "NaN", "Infinity", 1.5, None, True, ""])
def test_parse_usd_refuses_non_decimals(bad: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        parse_usd(bad)
