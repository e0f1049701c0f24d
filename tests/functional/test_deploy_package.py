"""`chalice package --stage dev` builds what `chalice deploy` would: authorizer, schedules, IAM.

The stage's resource names are filled in a copy of the project, as analytics_infra's
outputs_to_config would after deploying the infrastructure stack.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
POOL_ARN = "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Example1"
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


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    project = tmp_path_factory.mktemp("project")
    for name in ("app.py", "requirements.txt", "chalicelib", ".chalice"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, project / name, ignore=shutil.ignore_patterns("__pycache__", "deployments")
            )
        else:
            shutil.copy(source, project / name)
    config_path = project / ".chalice" / "config.json"
    config = json.loads(config_path.read_text())
    config["stages"]["dev"]["environment_variables"].update(
        USER_POOL_ID="us-east-1_Example1",
        USER_POOL_ARN=POOL_ARN,
        USER_POOL_CLIENT_ID="exampleclient",
    )
    config_path.write_text(json.dumps(config))
    out = project / "out"
    subprocess.run(
        [str(Path(sys.executable).parent / "chalice"), "package", "--stage", "dev", str(out)],
        cwd=project,
        check=True,
        capture_output=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "AWS_DEFAULT_REGION": "us-east-1"},
    )
    return json.loads((out / "sam.json").read_text()), out / "deployment.zip"


def test_every_route_is_behind_the_cognito_authorizer(package: tuple[dict[str, Any], Path]) -> None:
    template, _ = package
    (api,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Api"]
    body = api["Properties"]["DefinitionBody"]
    routes = {(path, method) for path, methods in body["paths"].items() for method in methods}
    assert routes == ROUTES | PUBLIC
    for path, method in PUBLIC:
        assert "security" not in body["paths"][path][method]
    for path, method in ROUTES:
        security = body["paths"][path][method]["security"]
        (name,) = security[0]
        authorizer = body["securityDefinitions"][name]["x-amazon-apigateway-authorizer"]
        assert authorizer["type"] == "cognito_user_pools"
        assert authorizer["providerARNs"] == [POOL_ARN]


def test_schedules_get_the_pandas_layer_and_long_timeouts(
    package: tuple[dict[str, Any], Path],
) -> None:
    template, _ = package
    functions = {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    scheduled = {name: props for name, props in functions.items() if "Events" in props}
    assert {
        "MaintainUsageToday",
        "MaintainUsageYesterday",
        "SweepLateUsage",
        "RepairBudgetCounters",
    } <= set(scheduled)
    for name in ("MaintainUsageToday", "MaintainUsageYesterday", "SweepLateUsage"):
        assert scheduled[name]["Timeout"] == 900
        assert any("AWSSDKPandas-Python311" in layer for layer in scheduled[name]["Layers"])
    for props in functions.values():
        assert props["Runtime"] == "python3.11"


def test_iam_comes_from_the_stage_policy_file(package: tuple[dict[str, Any], Path]) -> None:
    template, _ = package
    roles = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    expected = json.loads((ROOT / ".chalice" / "policy-dev.json").read_text())
    assert len(roles) == 5  # the API handler and the four scheduled functions
    for role in roles:
        (policy,) = role["Properties"]["Policies"]
        assert policy["PolicyDocument"] == expected


def test_bundle_holds_no_sdk_or_analytics_libraries(package: tuple[dict[str, Any], Path]) -> None:
    _, bundle = package
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        unzipped = sum(info.file_size for info in archive.infolist())
    assert "app.py" in names
    assert any(name.startswith("chalicelib/data/prices/") for name in names)
    assert not [name for name in names if name.startswith(NOT_BUNDLED)]
    assert any(name.startswith("jwt/") for name in names)
    # Room for the AWS SDK for pandas layer within Lambda's 250 MB unzipped limit.
    assert unzipped < 30 * 1024 * 1024
