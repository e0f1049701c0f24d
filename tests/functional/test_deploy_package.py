"""`make package STAGE=dev REGION=ap-northeast-2`: offline, nothing tracked changes, and the
rendered stacks are lint-clean and wired by CloudFormation (authorizer, schedules, sizes,
layers, roles, logs, alarms, bundle)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file

from chalicelib.settings import OUTPUT_TO_ENV
from deploy.app_template import chalice_functions
from deploy.functions import FUNCTIONS, MAX_MEMORY_MB
from deploy.naming import Deployment

ROOT = Path(__file__).resolve().parents[2]
STAGE, REGION = "dev", "ap-northeast-2"
LAYER = "arn:aws:lambda:ap-northeast-2:336392948345:layer:AWSSDKPandas-Python311:33"
ROUTES = {
    ("/bedrock/chat", "post"),
    ("/usage", "get"),
    ("/usage/plan", "get"),
    ("/admin/usage", "get"),
    ("/admin/tenants/{tenant_id}/plan", "get"),
    ("/admin/tenants/{tenant_id}/plan", "put"),
    ("/admin/tenants/{tenant_id}/usage", "get"),
}
# Declared with `public_route` (see tests/functional/test_route_authentication.py).
PUBLIC = {("/dashboard", "get")}
NOT_BUNDLED = ("boto3/", "botocore/", "pandas/", "pyarrow/", "awswrangler/", "numpy/", "duckdb/")
NO_CREDENTIALS = {
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def offline_env() -> dict[str, str]:
    """This process's environment without any AWS credentials or profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, **NO_CREDENTIALS}


def tracked_state() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """`python -m deploy package` with no credentials at all (as `make package` runs it)."""
    out = tmp_path_factory.mktemp("build") / STAGE
    before = tracked_state()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deploy",
            "package",
            "--stage",
            STAGE,
            "--region",
            REGION,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return out, before, tracked_state()


def template(rendered: tuple[Path, str, str], name: str) -> dict[str, Any]:
    return dict(json.loads((rendered[0] / f"{name}.template.json").read_text()))


def functions(app: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: app["Resources"][logical_id]["Properties"]
        for name, (logical_id, _) in chalice_functions(app).items()
    }


def test_packaging_changes_no_tracked_file(rendered: tuple[Path, str, str]) -> None:
    _, before, after = rendered
    assert after == before


def test_everything_a_deployment_needs_is_rendered(rendered: tuple[Path, str, str]) -> None:
    out = rendered[0]
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "app.template.json",
        "data.template.json",
        "deployment.zip",
        "infra.template.json",
        "manifest.json",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    deployment = Deployment(STAGE, REGION)
    assert list(manifest["stacks"]) == list(deployment.stacks)
    assert manifest["pandas_layer"]["arn"] == LAYER
    assert "pandas_layers.json" in manifest["pandas_layer"]["source"]


def test_every_rendered_template_is_lint_clean(rendered: tuple[Path, str, str]) -> None:
    for name in ("data", "infra", "app"):
        path = rendered[0] / f"{name}.template.json"
        matches = lint_file(path, config=ManualArgs(regions=[REGION]))
        assert [str(m) for m in matches] == [], name


def test_every_route_is_behind_the_data_stacks_user_pool(
    rendered: tuple[Path, str, str],
) -> None:
    app = template(rendered, "app")
    (api,) = [r for r in app["Resources"].values() if r["Type"] == "AWS::Serverless::Api"]
    assert api["Properties"]["Name"] == "bedrock-saas-metering-dev"
    body = api["Properties"]["DefinitionBody"]
    routes = {(path, method) for path, methods in body["paths"].items() for method in methods}
    assert routes == ROUTES | PUBLIC
    for path, method in PUBLIC:
        assert "security" not in body["paths"][path][method]
    pool = {"Fn::ImportValue": "bedrock-metering-dev-UserPoolArn"}
    for path, method in ROUTES:
        (security,) = body["paths"][path][method]["security"]
        (name,) = security
        authorizer = body["securityDefinitions"][name]["x-amazon-apigateway-authorizer"]
        assert authorizer["type"] == "cognito_user_pools"
        assert authorizer["providerARNs"] == [pool]


def test_stack_values_reach_the_functions_through_imports(
    rendered: tuple[Path, str, str],
) -> None:
    app = template(rendered, "app")
    text = json.dumps(app)
    assert "PLACEHOLDER" not in text
    assert "000000000000" not in text
    for name, props in functions(app).items():
        variables = props["Environment"]["Variables"]
        for output, variable in OUTPUT_TO_ENV.items():
            assert variables[variable] == {"Fn::ImportValue": f"bedrock-metering-dev-{output}"}
        assert variables["STAGE"] == STAGE, name
        assert variables["TOKEN_VERIFICATION"] == "apigateway"
        assert variables["QUERY_ENGINE"] == "athena"


def test_functions_fit_a_fresh_account_with_explicit_limits(
    rendered: tuple[Path, str, str],
) -> None:
    props = functions(template(rendered, "app"))
    assert set(props) == set(FUNCTIONS)
    for name, function in props.items():
        assert function["Runtime"] == "python3.11"
        assert function["MemorySize"] <= MAX_MEMORY_MB, name
        assert "Timeout" in function, name
    assert (props["api_handler"]["MemorySize"], props["api_handler"]["Timeout"]) == (1024, 30)
    for name in ("maintain_usage_today", "maintain_usage_yesterday", "sweep_late_usage"):
        assert (props[name]["MemorySize"], props[name]["Timeout"]) == (2048, 900)
        assert props[name]["ReservedConcurrentExecutions"] == 1
        assert props[name]["Layers"] == [LAYER]
        assert props[name]["EphemeralStorage"] == {"Size": 4096}  # the job's spill
    assert props["repair_budget_counters"]["ReservedConcurrentExecutions"] == 1
    assert props["repair_budget_counters"]["Timeout"] < 300  # before the next run
    # pyarrow reads the curated row groups that hold expired reservations' events.
    assert props["repair_budget_counters"]["Layers"] == [LAYER]
    assert "EphemeralStorage" not in props["repair_budget_counters"]
    assert "ReservedConcurrentExecutions" not in props["api_handler"]
    assert props["api_handler"]["Layers"] == [LAYER]  # GET /usage reads Athena with awswrangler


def test_each_function_has_its_name_role_and_log_group(rendered: tuple[Path, str, str]) -> None:
    app = template(rendered, "app")
    found = chalice_functions(app)
    roles = {role for _, role in found.values()}
    assert len(roles) == len(found)
    deployment = Deployment(STAGE, REGION)
    for name, (logical_id, _) in found.items():
        resource = app["Resources"][logical_id]
        assert resource["Properties"]["FunctionName"] == deployment.function_name(name)
        (log_group,) = resource["DependsOn"]
        group = app["Resources"][log_group]["Properties"]
        assert group["LogGroupName"] == f"/aws/lambda/{deployment.function_name(name)}"
        assert group["RetentionInDays"] == 30


def test_alarms_cover_delivery_jobs_api_and_stale_reservations(
    rendered: tuple[Path, str, str],
) -> None:
    app = template(rendered, "app")
    alarms = {
        logical_id: resource["Properties"]
        for logical_id, resource in app["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }
    topic = [{"Fn::ImportValue": "bedrock-metering-dev-AlertsTopicArn"}]
    assert all(props["AlarmActions"] == topic for props in alarms.values())
    found = chalice_functions(app)
    for name, spec in FUNCTIONS.items():
        logical_id = found[name][0]
        assert (f"{logical_id}ErrorsAlarm" in alarms) == spec.is_job, name
    metrics = {props.get("MetricName") for props in alarms.values()}
    assert {"DeliveryToS3.Success", "DeliveryToS3.DataFreshness"} <= metrics
    api = alarms["ApiServerErrorRateAlarm"]["Metrics"]
    dimensions = api[0]["MetricStat"]["Metric"]["Dimensions"]
    assert {"Name": "ApiName", "Value": "bedrock-saas-metering-dev"} in dimensions
    filters = [r for r in app["Resources"].values() if r["Type"] == "AWS::Logs::MetricFilter"]
    assert len(filters) == 2
    repair_group = f"{found['repair_budget_counters'][0]}LogGroup"
    assert all(f["Properties"]["LogGroupName"] == {"Ref": repair_group} for f in filters)
    assert "StaleReservationsAlarm" in alarms


def test_bundle_holds_no_sdk_or_analytics_libraries(rendered: tuple[Path, str, str]) -> None:
    with zipfile.ZipFile(rendered[0] / "deployment.zip") as archive:
        names = archive.namelist()
        unzipped = sum(info.file_size for info in archive.infolist())
    assert "app.py" in names
    assert any(name.startswith("chalicelib/data/prices/") for name in names)
    assert not [name for name in names if name.startswith(NOT_BUNDLED)]
    assert any(name.startswith("jwt/") for name in names)
    # Room for the AWS SDK for pandas layer within Lambda's 250 MB unzipped limit.
    assert unzipped < 30 * 1024 * 1024


def test_templates_fit_cloudformation_limits(rendered: tuple[Path, str, str]) -> None:
    out = rendered[0]
    for name in ("data", "infra"):  # sent inline (51,200 bytes at most)
        assert (out / f"{name}.template.json").stat().st_size < 51_200, name
    assert (out / "app.template.json").stat().st_size < 1_000_000  # sent from S3


def test_without_reserved_concurrency_for_accounts_that_cannot_reserve(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deploy",
            "package",
            "--stage",
            STAGE,
            "--region",
            REGION,
            "--out",
            str(tmp_path),
            "--no-reserved-concurrency",
        ],
        cwd=ROOT,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    app = json.loads((tmp_path / "app.template.json").read_text())
    for name, props in functions(app).items():
        assert "ReservedConcurrentExecutions" not in props, name


def test_the_api_may_invoke_only_the_stages_models(rendered: tuple[Path, str, str]) -> None:
    # The dev stage offers only MODEL_ID (no ALLOWED_MODELS in its block): one model, in the
    # stage's region. tests/functional/test_deploy_iam.py covers a stage offering more.
    app = template(rendered, "app")
    manifest = json.loads((rendered[0] / "manifest.json").read_text())
    assert manifest["models"] == [manifest["model_id"]]
    found = chalice_functions(app)
    invoking = {}
    for name, (_, role) in found.items():
        (policy,) = app["Resources"][role]["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]:
            if any(action.startswith("bedrock:") for action in statement["Action"]):
                invoking[name] = statement
    assert list(invoking) == ["api_handler"]
    statement = invoking["api_handler"]
    assert statement["Action"] == ["bedrock:InvokeModel"]
    model = manifest["model_id"]
    assert statement["Resource"] == [
        {"Fn::Sub": f"arn:${{AWS::Partition}}:bedrock:${{AWS::Region}}::foundation-model/{model}"}
    ]
