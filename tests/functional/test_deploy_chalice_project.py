"""`chalice deploy` keeps working: a generated project holds the stage's real values and one
concrete policy per function, and Chalice accepts it (checked with `chalice package`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import chalice_project, layers
from deploy.errors import DeployError
from deploy.naming import Deployment

REGION = "eu-west-1"
ACCOUNT = "123456789012"
DEV = Deployment("dev", REGION)
OUTPUTS = {
    "UserPoolId": f"{REGION}_Pool1",
    "UserPoolArn": f"arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/{REGION}_Pool1",
    "UserPoolClientId": "client1",
    "AnalyticsBucketName": f"bedrock-metering-dev-{ACCOUNT}-{REGION}",
    "FirehoseStreamName": "bedrock-metering-dev-usage-events",
    "GlueDatabaseName": "bedrock_metering_db",
    "GlueTableName": "token_usage_logs",
    "AthenaWorkGroupName": "bedrock-metering-workgroup",
    "PlansTableName": "bedrock-metering-dev-plans",
    "CurationTableName": "bedrock-metering-dev-curation",
    "AlertsTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:bedrock-metering-dev-budget-alerts",
    "Region": REGION,
    "Stage": "dev",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    layer = layers.from_table(REGION, layers.pinned_version())
    return chalice_project.write(DEV, OUTPUTS, layer, tmp_path_factory.mktemp("build"))


def test_the_stage_config_holds_the_deployed_values(project: Path) -> None:
    config = json.loads((project / ".chalice" / "config.json").read_text())
    (stage,) = config["stages"]
    variables = config["stages"]["dev"]["environment_variables"]
    assert stage == "dev"
    assert variables["USER_POOL_ARN"] == OUTPUTS["UserPoolArn"]
    assert variables["PLANS_TABLE"] == OUTPUTS["PlansTableName"]
    assert variables["TOKEN_VERIFICATION"] == "apigateway"
    functions = config["stages"]["dev"]["lambda_functions"]
    assert functions["repair_budget_counters"]["layers"][0].startswith(f"arn:aws:lambda:{REGION}:")
    assert functions["api_handler"]["layers"][0].startswith(f"arn:aws:lambda:{REGION}:")


def test_each_policy_is_concrete_and_scoped_to_the_stage(project: Path) -> None:
    for path in sorted((project / ".chalice").glob("policy-*.json")):
        policy = json.loads(path.read_text())
        for statement in policy["Statement"]:
            for resource in statement["Resource"]:
                assert isinstance(resource, str), path.name
                assert "${" not in resource, path.name
                assert resource.startswith("arn:aws:"), resource
    api = json.loads((project / ".chalice" / "policy-api_handler.json").read_text())
    logs = api["Statement"][0]
    assert "logs:CreateLogGroup" in logs["Action"]  # nothing else creates it with Chalice
    assert logs["Resource"] == [
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/bedrock-saas-metering-dev:*"
    ]


def test_chalice_accepts_the_project(project: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from chalice.cli import main; sys.exit(main())",
            "package",
            "--stage",
            "dev",
            str(tmp_path / "out"),
        ],
        cwd=project,
        env={**env, "AWS_DEFAULT_REGION": REGION},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    sam = json.loads((tmp_path / "out" / "sam.json").read_text())
    roles = [r for r in sam["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert len(roles) == 5


def test_without_the_stacks_outputs_it_says_what_to_deploy_first(tmp_path: Path) -> None:
    layer = layers.from_table(REGION, layers.pinned_version())
    with pytest.raises(DeployError, match="make deploy-infra STAGE=dev"):
        chalice_project.write(DEV, {"Region": REGION}, layer, tmp_path)
