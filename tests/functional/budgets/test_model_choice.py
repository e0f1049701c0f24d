"""Model choice on POST /bedrock/chat with budgets on: the request's `model`, the stage's offer
(MODEL_ID and ALLOWED_MODELS) and the tenant's plan decide; the model called is the one billed,
reserved for, capped and measured."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import wiring
from chalicelib.metrics import OTHER_MODEL, EmfCallMetrics
from chalicelib.model_profiles import StaticProfileLookup
from chalicelib.settings import DEFAULT_MODEL_ID
from tests.functional.budgets.conftest import BudgetEnv, budget_settings, chat, set_plan
from tests.functional.conftest import auth, stored_events

NOVA_MICRO = "amazon.nova-micro-v1:0"
NOVA_LITE = "amazon.nova-lite-v1:0"
OPUS = "anthropic.claude-3-opus-20240229-v1:0"
HAIKU_US = f"us.{DEFAULT_MODEL_ID}"
# What the stage offers besides its model; a plan picks among them.
OFFER = f"{NOVA_MICRO},{NOVA_LITE},{OPUS},{HAIKU_US}"
APP_PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/unmapped"


@pytest.fixture
def offer(budget_env: BudgetEnv) -> io.StringIO:
    """The stage offers OFFER, with the stage's real max_tokens limits (so each model's own
    cap shows); the EMF lines are written to the returned buffer."""
    settings = budget_settings(
        budget_env.alerts.topic_arn,
        ALLOWED_MODELS=OFFER,
        DEFAULT_MAX_TOKENS="512",
        MAX_TOKENS_LIMIT="4096",
    )
    lines = io.StringIO()
    wiring.override(
        settings=settings, call_metrics=EmfCallMetrics(stream=lines, models=settings.stage_models)
    )
    return lines


def rejected() -> list[dict[str, Any]]:
    return [e for e in stored_events() if e["status"] == "rejected"]


def emf_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_model_the_plan_allows_is_called_billed_and_measured_as_itself(
    client: Client, budget_env: BudgetEnv, offer: io.StringIO
) -> None:
    set_plan(client, "tenant-a", allowed_models=[DEFAULT_MODEL_ID, NOVA_MICRO])
    budget_env.bedrock.reply(input_tokens=100, output_tokens=50)

    response = chat(client, model=NOVA_MICRO, max_tokens=64)

    assert response.status_code == 200, response.json_body
    assert budget_env.bedrock.calls[0]["modelId"] == NOVA_MICRO
    (event,) = stored_events()
    assert event["model_id"] == NOVA_MICRO
    # 100 * 0.035/1M + 50 * 0.14/1M: Nova Micro's prices, not the stage model's.
    assert Decimal(event["cost_usd"]) == Decimal("0.0000105")
    plan = client.http.get("/usage/plan", headers=auth("tenant-a")).json_body
    assert plan["month_to_date"]["spent_usd"] == "0.0000105"
    (line,) = emf_lines(offer)
    assert (line["model_id"], line["InputTokens"], line["cost_usd"]) == (
        NOVA_MICRO,
        100,
        "0.0000105",
    )


def test_the_reservation_is_the_chosen_models_worst_case(
    client: Client, budget_env: BudgetEnv, offer: io.StringIO
) -> None:
    # "hi" with max_tokens 64 may cost (66 * 0.25 + 64 * 1.25)/1M = $0.0000965 on Haiku and
    # (66 * 15 + 64 * 75)/1M = $0.00579 on Opus: a $0.001 budget holds the one, not the other.
    set_plan(
        client, "tenant-a", monthly_budget_usd="0.001", allowed_models=[DEFAULT_MODEL_ID, OPUS]
    )
    budget_env.bedrock.reply()
    assert chat(client, max_tokens=64).status_code == 200

    refused = chat(client, model=OPUS, max_tokens=64)

    assert refused.status_code == 429
    assert "could cost up to $0.00579" in refused.json_body["Message"]
    assert len(budget_env.bedrock.calls) == 1
    (event,) = rejected()
    assert (event["model_id"], event["error_code"]) == (OPUS, "BudgetExceeded")


def test_max_tokens_is_capped_for_the_chosen_model(
    client: Client, budget_env: BudgetEnv, offer: io.StringIO
) -> None:
    set_plan(client, "tenant-a", allowed_models=[DEFAULT_MODEL_ID, OPUS])
    # Opus plans at 20 tokens/s: 384 fit the deadline; Haiku (80/s) may have 1664.
    too_many = chat(client, model=OPUS, max_tokens=500)
    assert too_many.status_code == 400
    assert f"between 1 and 384 for the model {OPUS}" in too_many.json_body["Message"]
    assert "X-Request-Id" not in too_many.headers  # bad input: no event

    budget_env.bedrock.reply()
    budget_env.bedrock.reply()
    assert chat(client, max_tokens=500).status_code == 200
    assert chat(client, model=OPUS).status_code == 200  # no max_tokens: the model's default
    assert [c["inferenceConfig"]["maxTokens"] for c in budget_env.bedrock.calls] == [500, 384]
    assert sorted(e["model_id"] for e in stored_events()) == [DEFAULT_MODEL_ID, OPUS]


@pytest.mark.parametrize(
    "model",
    ["acme.mystery-model-v1:0", "cohere.command-r-v1:0", APP_PROFILE],
    ids=["unknown", "unpriced", "unmapped-application-profile"],
)
def test_an_unknown_or_unpriced_model_is_400_recorded_and_never_called(
    client: Client, budget_env: BudgetEnv, offer: io.StringIO, model: str
) -> None:
    lookup = StaticProfileLookup({APP_PROFILE: [f"arn:aws:bedrock:::foundation-model/{OPUS}"]})
    wiring.override(profile_lookup=lookup)

    response = chat(client, model=model)

    assert response.status_code == 400
    assert f"Unknown model '{model}'" in response.json_body["Message"]
    assert "no price for it" in response.json_body["Message"]
    assert budget_env.bedrock.calls == []
    assert lookup.calls == []  # a profile a request names is never looked up
    (event,) = rejected()
    assert (event["model_id"], event["error_code"]) == (model, "ModelNotPriced")
    assert (event["cost_usd"], event["total_tokens"]) == ("0", 0)
    assert response.headers["X-Request-Id"] == event["event_id"]
    # A caller-typed id is no metric dimension (each would be a billed custom metric).
    (line,) = emf_lines(offer)
    assert (line["model_id"], line["requested_model_id"], line["Rejected"]) == (
        OTHER_MODEL,
        model,
        1,
    )
    month = client.http.get("/usage/plan", headers=auth("tenant-a")).json_body["month_to_date"]
    assert (month["spent_usd"], month["reserved_usd"]) == ("0.00", "0.00")


@pytest.mark.parametrize(
    "model",
    [
        NOVA_LITE,  # offered by the stage, not in the plan
        "amazon.nova-pro-v1:0",  # priced and in the plan, but not offered by the stage
        f"eu.{DEFAULT_MODEL_ID}",  # the plan's model through a profile the stage does not call
    ],
    ids=["not-in-plan", "not-offered", "other-profile"],
)
def test_a_model_the_tenant_may_not_use_is_403_naming_those_it_may(
    client: Client, budget_env: BudgetEnv, offer: io.StringIO, model: str
) -> None:
    set_plan(
        client, "tenant-a", allowed_models=[DEFAULT_MODEL_ID, NOVA_MICRO, "amazon.nova-pro-v1:0"]
    )

    response = chat(client, model=model)

    assert response.status_code == 403
    message = response.json_body["Message"]
    assert f"does not allow the model {model}" in message
    assert f"Models you may use: {DEFAULT_MODEL_ID}, {NOVA_MICRO}, {HAIKU_US}." in message
    assert budget_env.bedrock.calls == []
    (event,) = rejected()
    assert (event["model_id"], event["error_code"]) == (model, "ModelNotAllowed")
    assert response.headers["X-Request-Id"] == event["event_id"]


def test_a_profile_of_an_allowed_model_is_usable_where_the_stage_offers_it(
    client: Client, budget_env: BudgetEnv, offer: io.StringIO
) -> None:
    # The default plan allows the stage's model; the stage also offers it through the US
    # cross-region profile, which resolves to the same model and its price.
    budget_env.bedrock.reply(input_tokens=12, output_tokens=9)

    assert chat(client, model=HAIKU_US).status_code == 200

    assert budget_env.bedrock.calls[0]["modelId"] == HAIKU_US
    (event,) = stored_events()
    assert (event["model_id"], event["cost_usd"]) == (HAIKU_US, "0.00001425")


def test_the_default_plan_allows_only_the_stages_model(
    client: Client, budget_env: BudgetEnv, offer: io.StringIO
) -> None:
    response = chat(client, model=NOVA_MICRO)
    assert response.status_code == 403
    assert response.json_body["Message"].endswith(
        f"Models you may use: {DEFAULT_MODEL_ID}, {HAIKU_US}."
    )


def test_each_kind_of_model_refusal_is_counted_under_its_own_reason(
    client: Client, budget_env: BudgetEnv, offer: io.StringIO
) -> None:
    # Refusals are counted per tenant, reason and minute (chalicelib.refusals); the reason
    # keeps an unknown model apart from a model the tenant may not use.
    for model in ("acme.a-v1:0", "acme.b-v1:0", NOVA_LITE, NOVA_LITE, NOVA_LITE):
        chat(client, model=model)

    counters = wiring.request_items(budget_env.settings).closed("tenant-a", "9999")
    assert {c.reason: c.refused for c in counters} == {"ModelNotPriced": 2, "ModelNotAllowed": 3}
    assert sorted((e["error_code"], e["model_id"]) for e in rejected()) == [
        *[("ModelNotAllowed", NOVA_LITE)] * 3,
        ("ModelNotPriced", "acme.a-v1:0"),
        ("ModelNotPriced", "acme.b-v1:0"),
    ]
