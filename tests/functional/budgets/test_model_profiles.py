"""An application inference profile as the stage's model: resolved once, priced as its model."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber
from chalice.test import Client

from chalicelib import wiring
from chalicelib.model_profiles import BedrockProfileLookup
from chalicelib.pricing import UnknownModelError
from chalicelib.settings import DEFAULT_MODEL_ID
from tests.functional.budgets.conftest import BudgetEnv, budget_settings, chat
from tests.functional.conftest import stored_events
from tests.support.tokens import REGION

APP_PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/team-a"


def profile_response(*model_ids: str) -> dict[str, object]:
    return {
        "inferenceProfileName": "team-a",
        "inferenceProfileArn": APP_PROFILE,
        "inferenceProfileId": "team-a",
        "status": "ACTIVE",
        "type": "APPLICATION",
        "createdAt": datetime(2026, 1, 1, tzinfo=UTC),
        "models": [
            {"modelArn": f"arn:aws:bedrock:{region}::foundation-model/{model_id}"}
            for model_id in model_ids
            for region in ("us-east-1", "us-west-2")
        ],
    }


def test_bedrock_lookup_reads_the_profiles_model_arns(aws: None) -> None:
    client = boto3.client("bedrock", region_name=REGION)
    with Stubber(client) as stubber:
        stubber.add_response(
            "get_inference_profile",
            profile_response(DEFAULT_MODEL_ID),
            {"inferenceProfileIdentifier": APP_PROFILE},
        )
        arns = BedrockProfileLookup(client).model_arns(APP_PROFILE)
    assert len(arns) == 2
    assert all(arn.endswith(DEFAULT_MODEL_ID) for arn in arns)


def test_lookup_failure_says_how_to_configure_offline(aws: None) -> None:
    client = boto3.client("bedrock", region_name=REGION)
    with Stubber(client) as stubber:
        stubber.add_client_error("get_inference_profile", "AccessDeniedException", "no", 403)
        with pytest.raises(UnknownModelError, match="MODEL_ALIASES"):
            BedrockProfileLookup(client).model_arns(APP_PROFILE)


def test_chat_through_an_application_profile_is_priced_as_its_base_model(
    client: Client, budget_env: BudgetEnv
) -> None:
    bedrock = boto3.client("bedrock", region_name=REGION)
    stubber = Stubber(bedrock)
    stubber.add_response("get_inference_profile", profile_response(DEFAULT_MODEL_ID))
    wiring.override(
        settings=budget_settings(budget_env.alerts.topic_arn, MODEL_ID=APP_PROFILE),
        profile_lookup=BedrockProfileLookup(bedrock),
    )
    budget_env.bedrock.reply(input_tokens=12, output_tokens=9)

    with stubber:
        assert chat(client).status_code == 200
        budget_env.bedrock.reply()
        assert chat(client).status_code == 200  # resolved once, at configuration time

    (first,) = [e for e in stored_events() if e["input_tokens"] == 12]
    assert first["model_id"] == APP_PROFILE
    assert first["cost_usd"] == "0.00001425"  # 12 * 0.25/1M + 9 * 1.25/1M
    assert budget_env.bedrock.calls[0]["modelId"] == APP_PROFILE


def test_unresolvable_model_is_a_configuration_error_not_a_free_call(
    client: Client, budget_env: BudgetEnv
) -> None:
    wiring.override(
        settings=budget_settings(MODEL_ID="acme.mystery-model-v1:0"),
    )
    response = chat(client)
    assert response.status_code == 500
    assert "not configured" in response.json_body["Message"]
    assert budget_env.bedrock.calls == []
    assert stored_events() == []
