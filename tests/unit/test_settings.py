"""Settings come from the environment with documented defaults, and bad values are named."""

from __future__ import annotations

import pytest

from chalicelib.errors import ConfigurationError
from chalicelib.settings import (
    DEFAULT_MODEL_ID,
    VERIFY_IN_APP,
    Settings,
    route_authorizer_needed,
    route_authorizer_pool_arn,
)

POOL_ARN = "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Example1"


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.model_id == DEFAULT_MODEL_ID
    assert settings.token_verification == VERIFY_IN_APP
    assert settings.glue_database == "bedrock_metering_db"
    assert settings.athena_workgroup == "bedrock-metering-workgroup"


def test_conversations_have_documented_limits() -> None:
    settings = Settings.from_env({})
    assert (settings.max_prompt_chars, settings.max_messages) == (20_000, 100)
    assert Settings.from_env({"MAX_MESSAGES": "8"}).max_messages == 8


def test_the_stage_offers_its_model_and_with_budgets_its_allowed_models() -> None:
    env = {"ALLOWED_MODELS": f" amazon.nova-micro-v1:0,,{DEFAULT_MODEL_ID}, us.x ,us.x"}
    assert Settings.from_env(env).stage_models == (
        DEFAULT_MODEL_ID,
        "amazon.nova-micro-v1:0",
        "us.x",
    )
    assert Settings.from_env({**env, "BUDGETS_ENABLED": "false"}).stage_models == (
        DEFAULT_MODEL_ID,
    )
    assert Settings.from_env({}).stage_models == (DEFAULT_MODEL_ID,)


def test_issuer_and_jwks_follow_the_pool() -> None:
    settings = Settings.from_env({"AWS_REGION": "eu-west-1", "USER_POOL_ID": "eu-west-1_abc"})
    assert settings.token_issuer == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc"
    assert settings.resolved_jwks_url == settings.token_issuer + "/.well-known/jwks.json"
    local = Settings.from_env(
        {"USER_POOL_ID": "p", "JWKS_URL": "http://127.0.0.1:4566/p/.well-known/jwks.json"}
    )
    assert local.resolved_jwks_url.startswith("http://127.0.0.1:4566/")


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"MAX_TOKENS_LIMIT": "lots"}, "MAX_TOKENS_LIMIT"),
        ({"TOKEN_VERIFICATION": "trust-me"}, "TOKEN_VERIFICATION"),
        ({"QUERY_ENGINE": "sqlite"}, "QUERY_ENGINE"),
        ({"DEFAULT_MAX_TOKENS": "9000"}, "DEFAULT_MAX_TOKENS"),
        ({"FIREHOSE_MAX_ATTEMPTS": "0"}, "FIREHOSE_MAX_ATTEMPTS"),
        ({"MAX_MESSAGES": "0"}, "MAX_MESSAGES"),
        ({"MAX_MESSAGES": "many"}, "MAX_MESSAGES"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env(env)


def test_only_apigateway_verification_puts_the_authorizer_on_routes() -> None:
    assert route_authorizer_needed({"TOKEN_VERIFICATION": "apigateway"})
    assert not route_authorizer_needed({"TOKEN_VERIFICATION": "app"})
    assert not route_authorizer_needed({})


def test_the_user_pool_arn_is_a_setting_like_the_others() -> None:
    assert Settings.from_env({"USER_POOL_ARN": POOL_ARN}).user_pool_arn == POOL_ARN
    assert Settings.from_env({}).user_pool_arn == ""


def test_the_authorizer_pool_is_read_only_where_api_gateway_verifies_tokens() -> None:
    assert route_authorizer_pool_arn({"USER_POOL_ARN": POOL_ARN}) is None
    verified_by_api_gateway = {"TOKEN_VERIFICATION": "apigateway", "USER_POOL_ARN": POOL_ARN}
    assert route_authorizer_pool_arn(verified_by_api_gateway) == POOL_ARN
    with pytest.raises(ConfigurationError, match="USER_POOL_ARN"):
        route_authorizer_pool_arn({"TOKEN_VERIFICATION": "apigateway"})
