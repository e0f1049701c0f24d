"""The composition root: named overrides only, and one object per stage configuration."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from chalicelib import wiring
from chalicelib.settings import Settings


@pytest.fixture(autouse=True)
def clean_wiring() -> Iterator[None]:
    wiring.reset()
    yield
    wiring.reset()


def settings(**env: str) -> Settings:
    return Settings.from_env({"AWS_REGION": "us-east-1", "ANALYTICS_BUCKET": "bucket", **env})


def test_overriding_an_unknown_name_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="cannot override modle") as raised:
        wiring.override(modle=object())
    assert "model" in str(raised.value)
    assert "settings" in str(raised.value)


def test_an_override_replaces_the_dependency_until_reset() -> None:
    fake = object()
    wiring.override(recorder=fake)
    assert wiring.recorder(settings()) is fake
    wiring.reset()
    assert wiring.recorder(settings()) is not fake


def test_overridden_settings_are_the_current_settings() -> None:
    chosen = settings(STAGE="chosen")
    wiring.override(settings=chosen)
    assert wiring.current_settings() is chosen


def test_equal_settings_share_one_object_and_different_settings_get_their_own() -> None:
    first = wiring.recorder(settings())
    assert wiring.recorder(settings()) is first  # equal, though another Settings object
    assert wiring.recorder(settings(FIREHOSE_MAX_ATTEMPTS="2")) is not first
    assert wiring.client("s3", settings()) is wiring.client("s3", settings())
    assert wiring.client("s3", settings()) is not wiring.client("s3", settings(STAGE="other"))


BUILDERS: dict[str, Callable[[Settings], object]] = {
    "prices": wiring.price_table,
    "profile_lookup": wiring.profile_lookup,
    "model": wiring.model,
    "recorder": wiring.recorder,
    "verifier": wiring.verifier,
    "analytics_session": wiring.analytics_session,
    "query_engine": wiring.query_engine,
    "budget_store": wiring.budget_store,
    "alert_publisher": wiring.alert_publisher,
    "budget_clock": lambda _settings: wiring.budget_clock(),
    "usage_event_finder": wiring.usage_event_finder,
    "call_metrics": wiring.call_metrics,
    "curation_state": wiring.curation_state,
    "request_items": wiring.request_items,
}


def test_the_overridable_names_are_the_settings_and_what_the_composer_builds() -> None:
    assert set(wiring.OVERRIDABLE) == {"settings", *BUILDERS}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_each_overridable_name_replaces_what_its_builder_returns(name: str) -> None:
    fake = object()
    wiring.override(**{name: fake})
    assert BUILDERS[name](settings(PLANS_TABLE="plans")) is fake
