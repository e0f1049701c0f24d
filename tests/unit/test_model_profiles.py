"""Application inference profile ARNs resolve to a base model: static aliases, then Bedrock."""

from __future__ import annotations

import pytest

from chalicelib.errors import ConfigurationError
from chalicelib.model_profiles import StaticProfileLookup, parse_aliases, resolve_aliases
from chalicelib.pricing import UnknownModelError, load_price_table
from chalicelib.settings import DEFAULT_MODEL_ID

APP_PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
HAIKU_ARN = f"arn:aws:bedrock:us-east-1::foundation-model/{DEFAULT_MODEL_ID}"


def test_static_alias_wins_without_asking_bedrock() -> None:
    lookup = StaticProfileLookup({})
    aliases = resolve_aliases([APP_PROFILE], {APP_PROFILE: DEFAULT_MODEL_ID}, lambda: lookup)
    assert aliases == {APP_PROFILE: DEFAULT_MODEL_ID}
    assert lookup.calls == []


def test_profile_resolves_through_its_model_arns() -> None:
    lookup = StaticProfileLookup(
        {APP_PROFILE: [HAIKU_ARN, HAIKU_ARN.replace("us-east-1", "us-west-2")]}
    )
    aliases = resolve_aliases([APP_PROFILE], {}, lambda: lookup)
    assert aliases == {APP_PROFILE: DEFAULT_MODEL_ID}
    prices = load_price_table().with_aliases(aliases)
    assert prices.price_of(APP_PROFILE) == prices.price_of(DEFAULT_MODEL_ID)


def test_plain_model_ids_never_build_a_lookup() -> None:
    def explode() -> StaticProfileLookup:
        raise AssertionError("no lookup needed")

    assert resolve_aliases([DEFAULT_MODEL_ID, f"us.{DEFAULT_MODEL_ID}"], {}, explode) == {}


@pytest.mark.parametrize(
    "arns", [[], [HAIKU_ARN, "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0"]]
)
def test_profile_without_exactly_one_base_model_is_a_configuration_error(
    arns: list[str],
) -> None:
    with pytest.raises(UnknownModelError, match=APP_PROFILE):
        resolve_aliases([APP_PROFILE], {}, lambda: StaticProfileLookup({APP_PROFILE: arns}))


@pytest.mark.parametrize("text", ["[1]", "{not json", '{"a": 1}', '{"a": ""}'])
def test_bad_model_aliases_name_the_variable(text: str) -> None:
    with pytest.raises(ConfigurationError, match="MODEL_ALIASES"):
        parse_aliases(text)


def test_context_window_variant_prices_as_its_base_model() -> None:
    prices = load_price_table()
    assert prices.price_of(f"{DEFAULT_MODEL_ID}:200k") == prices.price_of(DEFAULT_MODEL_ID)
