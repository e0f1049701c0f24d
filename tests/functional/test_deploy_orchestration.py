"""`make deploy` and `make destroy`: the order of the stacks, what is refused before any
change, what destroy keeps and deletes. CloudFormation is stubbed (botocore's Stubber) or
faked; everything else runs on moto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from deploy import deployer, destroyer
from deploy.cloudformation import Stacks, Template
from deploy.deployer import Options
from deploy.errors import DeployError
from deploy.naming import Deployment
from local.provision import provision_stack

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"
DEV = Deployment("dev", REGION)
NO_CREDENTIALS = {
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def without_credentials() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, **NO_CREDENTIALS}


def run(*command: str, env: Mapping[str, str], stdin: int | None = subprocess.DEVNULL) -> Any:
    return subprocess.run(
        list(command),
        cwd=ROOT,
        env=dict(env),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


# ---------------------------------------------------------------- refused before any change


def test_deploy_without_credentials_names_what_is_missing_and_renders_nothing(
    tmp_path: Path,
) -> None:
    out = tmp_path / "dev"
    result = run(
        sys.executable,
        "-m",
        "deploy",
        "deploy",
        "--stage",
        "dev",
        "--region",
        REGION,
        "--out",
        str(out),
        env=without_credentials(),
    )
    assert result.returncode == 2
    assert "No AWS credentials found" in result.stderr
    assert "AWS_PROFILE" in result.stderr
    assert "AWS_ACCESS_KEY_ID" in result.stderr
    assert "nothing was changed" in result.stderr
    assert not out.exists()


def test_make_deploy_without_credentials_stops_with_the_same_words() -> None:
    result = run(
        "make",
        "--no-print-directory",
        "deploy",
        "STAGE=dev",
        f"REGION={REGION}",
        env=without_credentials(),
    )
    assert result.returncode != 0
    assert "No AWS credentials found" in result.stderr


def test_rejected_credentials_are_named_as_such() -> None:
    session = boto3.session.Session(
        aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="x", region_name=REGION
    )
    sts = session.client("sts", region_name=REGION)

    class Session:
        def get_credentials(self) -> Any:
            return session.get_credentials()

        def client(self, service: str, **_: Any) -> Any:
            return sts

    with Stubber(sts) as stubber:
        stubber.add_client_error(
            "get_caller_identity", "ExpiredToken", "The security token included has expired"
        )
        with pytest.raises(DeployError, match="rejected the credentials \\(ExpiredToken\\)"):
            deployer.deploy(DEV, Options(layer_source="table"), session=Session(), say=print)


@pytest.mark.parametrize(
    ("stage", "region", "message"),
    [
        ("Dev", REGION, "cannot name the resources"),
        ("dev_1", REGION, "cannot name the resources"),
        ("local", REGION, "offline stack"),
        ("dev", "us-east-9", "not an AWS region"),
        ("dev", "mx-central-1", "No AWS SDK for pandas layer"),
        ("dev", "", "REGION is required"),
    ],
)
def test_bad_input_is_refused_before_anything_is_rendered(
    tmp_path: Path, stage: str, region: str, message: str
) -> None:
    out = tmp_path / "out"
    result = run(
        sys.executable,
        "-m",
        "deploy",
        "package",
        "--stage",
        stage,
        "--region",
        region,
        "--out",
        str(out),
        env=without_credentials(),
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert not out.exists()


# ---------------------------------------------------------------- destroy needs confirmation


def test_make_destroy_without_confirmation_does_nothing() -> None:
    env = {
        **without_credentials(),
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }  # any AWS call would fail loudly
    result = run(
        "make", "--no-print-directory", "destroy", "STAGE=dev", f"REGION={REGION}", env=env
    )
    assert result.returncode != 0
    assert "Nothing was deleted" in result.stderr
    assert "CONFIRM=dev" in result.stderr


def test_destroy_with_the_wrong_stage_confirmed_does_nothing() -> None:
    with pytest.raises(DeployError, match="does not match STAGE=dev; nothing was deleted"):
        destroyer.confirm(DEV, "prod", delete_data=False, interactive=False)


def test_destroy_asks_and_a_wrong_answer_does_nothing() -> None:
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "prod"

    with pytest.raises(DeployError, match="Not confirmed; nothing was deleted"):
        destroyer.confirm(DEV, None, delete_data=True, interactive=True, ask=ask)
    assert "THE DATA" in asked[0]
    destroyer.confirm(DEV, None, delete_data=False, interactive=True, ask=lambda _: "dev")


# ---------------------------------------------------------------- CloudFormation, stubbed


def quick_stacks(client: Any, said: list[str]) -> Stacks:
    return Stacks(client, say=said.append, wait={"Delay": 1, "MaxAttempts": 2})


def test_a_new_stack_is_created_through_a_change_set() -> None:
    client = boto3.client(
        "cloudformation", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    said: list[str] = []
    missing = "Stack with id s does not exist"
    created = {
        "StackName": "s",
        "CreationTime": "2026-01-01T00:00:00Z",
        "StackStatus": "CREATE_COMPLETE",
    }
    with Stubber(client) as stubber:
        stubber.add_client_error("describe_stacks", "ValidationError", missing)
        stubber.add_response(
            "create_change_set",
            {"Id": "cs", "StackId": "s"},
            {
                "StackName": "s",
                "ChangeSetName": stubber_any(),
                "ChangeSetType": "CREATE",
                "Parameters": [{"ParameterKey": "Stage", "ParameterValue": "dev"}],
                "Capabilities": ["CAPABILITY_IAM"],
                "Tags": [{"Key": "stage", "Value": "dev"}],
                "TemplateBody": "{}",
            },
        )
        stubber.add_response(
            "describe_change_set", {"Status": "CREATE_COMPLETE", "ExecutionStatus": "AVAILABLE"}
        )
        stubber.add_response("execute_change_set", {})
        stubber.add_response("describe_stacks", {"Stacks": [created]})
        changed = quick_stacks(client, said).deploy(
            "s",
            Template(body="{}"),
            parameters={"Stage": "dev"},
            capabilities=["CAPABILITY_IAM"],
            tags={"stage": "dev"},
        )
        stubber.assert_no_pending_responses()
    assert changed is True
    assert said[-1] == "  s: created"


def test_a_stacks_parameters_take_one_call_and_a_missing_stack_has_none() -> None:
    client = boto3.client(
        "cloudformation", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    deployed = {
        "StackName": "s",
        "CreationTime": "2026-01-01T00:00:00Z",
        "StackStatus": "UPDATE_COMPLETE",
        "Parameters": [{"ParameterKey": "GlueDatabaseName", "ParameterValue": "db_dev"}],
    }
    with Stubber(client) as stubber:
        stubber.add_response("describe_stacks", {"Stacks": [deployed]}, {"StackName": "s"})
        stubber.add_client_error(
            "describe_stacks", "ValidationError", "Stack with id t does not exist"
        )
        stubber.add_client_error("describe_stacks", "AccessDenied", "not allowed")
        stacks = quick_stacks(client, [])
        assert stacks.parameters("s") == {"GlueDatabaseName": "db_dev"}
        assert stacks.parameters("t") == {}
        with pytest.raises(ClientError):
            stacks.parameters("u")
        stubber.assert_no_pending_responses()


def test_an_unchanged_stack_is_left_alone() -> None:
    client = boto3.client(
        "cloudformation", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    current = {
        "StackName": "s",
        "CreationTime": "2026-01-01T00:00:00Z",
        "StackStatus": "UPDATE_COMPLETE",
    }
    failed = {
        "Status": "FAILED",
        "StatusReason": "The submitted information didn't contain "
        "changes. Submit different information to create a change set.",
    }
    with Stubber(client) as stubber:
        stubber.add_response("describe_stacks", {"Stacks": [current]})
        stubber.add_response("create_change_set", {"Id": "cs"})
        stubber.add_response("describe_change_set", failed)
        stubber.add_response("describe_change_set", failed)
        stubber.add_response("delete_change_set", {})
        changed = quick_stacks(client, []).deploy("s", Template(body="{}"))
        stubber.assert_no_pending_responses()
    assert changed is False


def test_a_busy_stack_is_refused() -> None:
    client = boto3.client(
        "cloudformation", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    busy = {
        "StackName": "s",
        "CreationTime": "2026-01-01T00:00:00Z",
        "StackStatus": "UPDATE_IN_PROGRESS",
    }
    with Stubber(client) as stubber:
        stubber.add_response("describe_stacks", {"Stacks": [busy]})
        with pytest.raises(DeployError, match="busy"):
            quick_stacks(client, []).deploy("s", Template(body="{}"))


def stubber_any() -> Any:
    from botocore.stub import ANY

    return ANY


# ---------------------------------------------------------------- the whole flow, faked stacks


class FakeStacks:
    """CloudFormation as the deploy and destroy flows see it, recording what they ask."""

    def __init__(self, statuses: Mapping[str, str] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.statuses = dict(statuses or {})
        self.templates: dict[str, Template] = {}
        self.parameters_given: dict[str, Mapping[str, str]] = {}
        self.artifacts = "bedrock-metering-dev-infra-artifacts-x1"

    def status(self, name: str) -> str | None:
        return self.statuses.get(name)

    def parameters(self, name: str) -> dict[str, str]:
        return {}

    def deploy(
        self,
        name: str,
        template: Template,
        *,
        parameters: Mapping[str, str] | None = None,
        capabilities: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
    ) -> bool:
        self.calls.append(("deploy", name))
        self.templates[name] = template
        self.parameters_given[name] = dict(parameters or {})
        if name == DEV.infra_stack:
            boto3.client("s3", region_name=REGION).create_bucket(Bucket=self.artifacts)
        self.statuses[name] = "CREATE_COMPLETE"
        return True

    def protect(self, name: str, enabled: bool = True) -> None:
        self.calls.append(("protect" if enabled else "unprotect", name))

    def outputs(self, name: str) -> dict[str, str]:
        if name == DEV.data_stack:
            return {"UserPoolId": "us-east-1_pool", "UserPoolClientId": "client"}
        if name == DEV.infra_stack:
            return {"ArtifactsBucketName": self.artifacts, "FirehoseStreamName": "stream"}
        return {"ApiGatewayUrl": "https://abc.execute-api.us-east-1.amazonaws.com/api/"}

    def delete(self, name: str) -> bool:
        self.calls.append(("delete", name))
        existed = self.statuses.pop(name, None) is not None
        return existed


@pytest.fixture
def fake_stacks(aws: None, monkeypatch: pytest.MonkeyPatch) -> FakeStacks:
    fake = FakeStacks()
    monkeypatch.setattr(deployer, "Stacks", lambda *_, **__: fake)
    monkeypatch.setattr(destroyer, "Stacks", lambda *_, **__: fake)
    monkeypatch.setattr(deployer, "concurrency_problem", lambda *_: None)  # not on moto
    return fake


def test_deploy_runs_data_then_infra_then_app_and_writes_the_outputs(
    fake_stacks: FakeStacks, tmp_path: Path
) -> None:
    said: list[str] = []
    outputs = deployer.deploy(
        DEV, Options(layer_source="table"), say=said.append, directory=tmp_path
    )

    assert fake_stacks.calls == [
        ("deploy", DEV.data_stack),
        ("protect", DEV.data_stack),
        ("deploy", DEV.infra_stack),
        ("deploy", DEV.app_stack),
    ]
    assert fake_stacks.parameters_given[DEV.data_stack] == {
        "Stage": "dev",
        "GlueDatabaseName": "bedrock_metering_db",
    }
    s3 = boto3.client("s3", region_name=REGION)
    url = fake_stacks.templates[DEV.app_stack].url
    assert url is not None
    assert url.startswith(f"https://{fake_stacks.artifacts}.s3.{REGION}.amazonaws.com/templates/")
    key = url.split(".amazonaws.com/", 1)[1]
    app = json.loads(s3.get_object(Bucket=fake_stacks.artifacts, Key=key)["Body"].read())
    uris = {
        r["Properties"]["CodeUri"]
        for r in app["Resources"].values()
        if r["Type"] == "AWS::Serverless::Function"
    }
    (uri,) = uris
    bundle = s3.get_object(Bucket=fake_stacks.artifacts, Key=uri.split("/", 3)[3])["Body"].read()
    assert bundle == (tmp_path / "deployment.zip").read_bytes()
    written = json.loads((tmp_path / "outputs.json").read_text())
    assert written == outputs
    assert {"UserPoolId", "UserPoolClientId", "ApiGatewayUrl", "Region", "Stage"} <= set(written)
    assert "ArtifactsBucketName" not in written
    assert written["Region"] == REGION
    assert any("ApiGatewayUrl = https://abc" in line for line in said)


def test_a_second_deploy_uploads_the_same_bundle_once(
    fake_stacks: FakeStacks, tmp_path: Path
) -> None:
    deployer.deploy(DEV, Options(layer_source="table"), say=lambda _: None, directory=tmp_path)
    said: list[str] = []
    deployer.deploy(DEV, Options(layer_source="table"), say=said.append, directory=tmp_path)
    assert any("already uploaded" in line for line in said)


def test_infra_only_stops_before_the_app(fake_stacks: FakeStacks, tmp_path: Path) -> None:
    outputs = deployer.deploy(
        DEV,
        Options(layer_source="table", infra_only=True),
        say=lambda _: None,
        directory=tmp_path,
    )
    assert ("deploy", DEV.app_stack) not in fake_stacks.calls
    assert "ApiGatewayUrl" not in outputs


def test_names_held_by_another_deployment_are_refused_before_any_change(
    fake_stacks: FakeStacks, tmp_path: Path
) -> None:
    boto3.client("glue", region_name=REGION).create_database(
        DatabaseInput={"Name": "bedrock_metering_db"}
    )
    boto3.client("athena", region_name=REGION).create_work_group(Name="bedrock-metering-workgroup")
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName="bedrock-metering-dev-plans",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    with pytest.raises(DeployError) as refused:
        deployer.deploy(DEV, Options(layer_source="table"), say=lambda _: None, directory=tmp_path)
    message = str(refused.value)
    assert message.startswith("Nothing was changed")
    assert "GLUE_DATABASE=bedrock_metering_dev" in message
    assert "ATHENA_WORKGROUP=bedrock-metering-dev" in message
    assert "bedrock-metering-dev-plans" in message
    assert "DELETE_DATA=1" in message
    assert fake_stacks.calls == []


def test_a_small_account_cannot_reserve_concurrency_for_the_jobs() -> None:
    client = boto3.client(
        "lambda", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    settings = {
        "AccountLimit": {
            "ConcurrentExecutions": 10,
            "UnreservedConcurrentExecutions": 10,
            "TotalCodeSize": 1,
            "CodeSizeUnzipped": 1,
            "CodeSizeZipped": 1,
        }
    }
    with Stubber(client) as stubber:
        stubber.add_response("get_account_settings", settings)
        problem = deployer.concurrency_problem(client, 4)
    assert problem is not None
    assert "RESERVED_CONCURRENCY=0" in problem
    assert deployer.concurrency_problem(client, 0) is None


# ---------------------------------------------------------------- destroy


@pytest.fixture
def deployed_dev(fake_stacks: FakeStacks) -> dict[str, str]:
    """The stage's data resources on moto, as the data stack made them, with some usage."""
    session = boto3.session.Session(region_name=REGION)
    outputs = dict(provision_stack(stage="dev", region=REGION, session=session).outputs)
    s3 = session.client("s3")
    bucket = outputs["AnalyticsBucketName"]
    s3.delete_bucket_policy(Bucket=bucket)  # in-process moto counts every request as non-TLS
    for n in range(3):
        s3.put_object(Bucket=bucket, Key="raw/2026/11/30/10/a", Body=f"v{n}".encode())
    s3.delete_object(Bucket=bucket, Key="raw/2026/11/30/10/a")  # a delete marker
    s3.put_object(Bucket=bucket, Key="usage/year=2026/month=11/day=30/p.parquet", Body=b"x")
    s3.create_bucket(Bucket=fake_stacks.artifacts)
    s3.put_object(Bucket=fake_stacks.artifacts, Key="app/1.zip", Body=b"zip")
    for name in DEV.stacks:
        fake_stacks.statuses[name] = "UPDATE_COMPLETE"
    return outputs


def test_destroy_keeps_the_data_stack_and_its_data(
    fake_stacks: FakeStacks, deployed_dev: dict[str, str]
) -> None:
    said: list[str] = []
    destroyer.destroy(DEV, delete_data=False, say=said.append)
    assert fake_stacks.calls == [("delete", DEV.app_stack), ("delete", DEV.infra_stack)]
    s3 = boto3.client("s3", region_name=REGION)
    assert s3.list_object_versions(Bucket=deployed_dev["AnalyticsBucketName"])["Versions"]
    assert boto3.client("dynamodb", region_name=REGION).describe_table(
        TableName=deployed_dev["PlansTableName"]
    )
    assert any(line.startswith(f"Kept {DEV.data_stack}") for line in said)
    assert s3.list_objects_v2(Bucket=fake_stacks.artifacts)["KeyCount"] == 0  # emptied


def test_destroy_with_delete_data_empties_and_deletes_everything(
    fake_stacks: FakeStacks, deployed_dev: dict[str, str]
) -> None:
    destroyer.destroy(DEV, delete_data=True, say=lambda _: None)
    assert fake_stacks.calls == [
        ("delete", DEV.app_stack),
        ("delete", DEV.infra_stack),
        ("unprotect", DEV.data_stack),
        ("delete", DEV.data_stack),
    ]
    buckets = [b["Name"] for b in boto3.client("s3", region_name=REGION).list_buckets()["Buckets"]]
    assert deployed_dev["AnalyticsBucketName"] not in buckets
    assert (
        deployed_dev["PlansTableName"]
        not in boto3.client("dynamodb", region_name=REGION).list_tables()["TableNames"]
    )
    pools = boto3.client("cognito-idp", region_name=REGION).list_user_pools(MaxResults=60)
    assert pools["UserPools"] == []


def test_delete_data_also_removes_what_a_lost_data_stack_left_behind(
    fake_stacks: FakeStacks, deployed_dev: dict[str, str]
) -> None:
    fake_stacks.statuses.clear()  # the stacks are gone, the retained resources are not
    destroyer.destroy(DEV, delete_data=True, say=lambda _: None)
    buckets = [b["Name"] for b in boto3.client("s3", region_name=REGION).list_buckets()["Buckets"]]
    assert deployed_dev["AnalyticsBucketName"] not in buckets


def test_a_deployed_stage_keeps_its_database_and_workgroup() -> None:
    class Deployed(FakeStacks):
        def parameters(self, name: str) -> dict[str, str]:
            return {"GlueDatabaseName": "db_dev", "AthenaWorkGroupName": "wg-dev"}

    stacks = Deployed({DEV.data_stack: "UPDATE_COMPLETE", DEV.infra_stack: "UPDATE_COMPLETE"})
    kept = deployer.stack_parameters(stacks, DEV, Options())  # type: ignore[arg-type]
    assert kept[DEV.data_stack]["GlueDatabaseName"] == "db_dev"
    assert kept[DEV.infra_stack]["AthenaWorkGroupName"] == "wg-dev"
    with pytest.raises(DeployError, match="would replace it"):
        deployer.stack_parameters(stacks, DEV, Options(glue_database="other"))  # type: ignore[arg-type]
    with pytest.raises(DeployError, match="cannot replace it in place"):
        deployer.stack_parameters(stacks, DEV, Options(athena_workgroup="other"))  # type: ignore[arg-type]
