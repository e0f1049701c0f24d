"""Each function's rendered IAM policy against the AWS calls its code really makes, on moto.

The app stack is rendered for stage `dev`; the stage's resources are provisioned on moto
from the same template; each function's code runs through Chalice's test client while every
botocore call is recorded (tests/support/iam.py). Then, per function:
- every recorded call is allowed by that function's policy, on that resource, and
- every statement of the policy is used by some recorded call, unless deploy/iam.py marks
  it an allowance and says why (Athena's reads as the caller, the runtime's logs).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from chalice.test import Client

from chalicelib import logs, wiring
from chalicelib.analytics.partitions import PartitionJobConfig
from chalicelib.bedrock import BedrockModel
from chalicelib.budgets.dynamo import DynamoBudgetStore
from chalicelib.identity import IdTokenVerifier
from chalicelib.settings import Settings, env_from_outputs
from deploy import cfn, functions, iam, layers, package
from deploy.app_template import chalice_functions
from deploy.functions import FUNCTIONS
from deploy.naming import Deployment
from local.provision import provision_stack
from tests.functional.conftest import TOKENS, auth
from tests.support.faults import SettleFailingClient
from tests.support.iam import (
    Account,
    Call,
    CallRecorder,
    Request,
    allowed,
    requests_for,
    uses,
)
from tests.support.tokens import CLIENT_ID, ISSUER
from tests.support.usage_events import event, ndjson

STAGE = "dev"
REGION = "us-east-1"
ACCOUNT = "123456789012"
DEPLOYMENT = Deployment(STAGE, REGION)
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
# The models the stage offers besides MODEL_ID (its stage block's ALLOWED_MODELS): a
# foundation model, and one through a US cross-region inference profile.
NOVA_MICRO = "amazon.nova-micro-v1:0"
HAIKU_35_US = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
OFFER = f"{NOVA_MICRO},{HAIKU_35_US}"


@pytest.fixture(scope="module")
def app_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    config = json.loads(functions.CHALICE_CONFIG.read_text(encoding="utf-8"))
    config["stages"][STAGE] = {"environment_variables": {"ALLOWED_MODELS": OFFER}}
    path = tmp_path_factory.mktemp("config") / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    layer = layers.from_table(REGION, layers.pinned_version())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(functions, "CHALICE_CONFIG", path)
        built = package.build(
            DEPLOYMENT, layer, tmp_path_factory.mktemp("build"), say=lambda _: None
        )
    return dict(json.loads(built.templates[DEPLOYMENT.app_stack].read_text(encoding="utf-8")))


@dataclass
class Stage:
    """The stage's resources on moto, its settings, and what each function may do there."""

    outputs: dict[str, str]
    settings: Settings
    policies: dict[str, dict[str, Any]]
    recorder: CallRecorder
    bedrock: Stubber
    client: Client

    @property
    def bucket(self) -> str:
        return self.outputs["AnalyticsBucketName"]

    def requests(self, calls: list[Call]) -> list[Request]:
        account = Account(ACCOUNT, self.outputs["AthenaWorkGroupName"])
        return [request for call in calls for request in requests_for(call, account)]

    def schedule(self, function: str, at: datetime) -> Any:
        event_ = self.client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )
        event_["time"] = at.isoformat()
        return self.client.lambda_.invoke(function, event_).payload


def _athena_results(stage_bucket: str) -> Any:
    """moto runs no SQL: give each query an empty result where awswrangler reads it."""
    from moto.athena.models import QueryResults, athena_backends

    def hook(call: Call, result: Any) -> None:
        if call.service != "athena" or call.operation != "StartQueryExecution":
            return
        query_id = result["QueryExecutionId"]
        columns = re.findall(r"\bAS (\w+)", call.params["QueryString"])
        header = ",".join(f'"{c}"' for c in columns) + "\n"
        boto3.client("s3", region_name=REGION).put_object(
            Bucket=stage_bucket, Key=f"athena-results/{query_id}.csv", Body=header.encode()
        )
        info = [{"Name": c, "Type": "varchar", "Label": c, "Nullable": "UNKNOWN"} for c in columns]
        backend = athena_backends[ACCOUNT][REGION]
        backend.query_results[query_id] = QueryResults(
            rows=[{"Data": [{"VarCharValue": c} for c in columns]}], column_info=info
        )

    return hook


@pytest.fixture
def stage(aws: None, app_template: dict[str, Any]) -> Iterator[Stage]:
    session = boto3.session.Session(region_name=REGION)
    outputs = dict(provision_stack(stage=STAGE, region=REGION, session=session).outputs)
    # In-process moto takes every request as sent without TLS, so the bucket's deny-without-
    # TLS statement would refuse them all; it is not what this module tests.
    session.client("s3").delete_bucket_policy(Bucket=outputs["AnalyticsBucketName"])
    exports = {DEPLOYMENT.export(name): value for name, value in outputs.items()}
    resolve = cfn.Resolver(pseudo=PSEUDO, exports=exports)
    policies = {}
    for name, (_, role) in chalice_functions(app_template).items():
        (policy,) = app_template["Resources"][role]["Properties"]["Policies"]
        policies[name] = resolve(policy["PolicyDocument"])
    settings = Settings.from_env(
        {
            **env_from_outputs(outputs),
            "STAGE": STAGE,
            "AWS_REGION": REGION,
            "TOKEN_VERIFICATION": "app",  # the test client has no API Gateway authorizer
            "QUERY_ENGINE": "athena",
            "BUDGETS_ENABLED": "true",
            "FIREHOSE_MAX_ATTEMPTS": "1",
            "DEFAULT_MAX_TOKENS": "64",
            "ALLOWED_MODELS": OFFER,
            # moto's in-process mock sees boto3's calls only; the lean client makes the same
            # DynamoDB and Firehose operations on the same resources.
            "REQUEST_PATH_AWS_CLIENT": "botocore",
        }
    )
    runtime = boto3.client("bedrock-runtime", region_name=REGION)
    stubber = Stubber(runtime)
    recorder = CallRecorder()
    recorder.after.append(_athena_results(outputs["AnalyticsBucketName"]))
    wiring.reset()
    wiring.override(
        settings=settings,
        model=BedrockModel(runtime),
        verifier=IdTokenVerifier(issuer=ISSUER, audience=CLIENT_ID, keys=TOKENS.keys),
    )
    from app import app

    with stubber, Client(app) as client, recorder.recording():
        yield Stage(outputs, settings, policies, recorder, stubber, client)
    wiring.reset()


def reply(stubber: Stubber, input_tokens: int = 100, output_tokens: int = 60) -> None:
    stubber.add_response(
        "converse",
        {
            "output": {"message": {"role": "assistant", "content": [{"text": "Hi."}]}},
            "stopReason": "end_turn",
            "usage": {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "totalTokens": input_tokens + output_tokens,
            },
            "metrics": {"latencyMs": 42},
        },
    )


def admin() -> dict[str, str]:
    return auth("provider", **{"cognito:groups": ["admins"], "cognito:username": "ops"})


def check(stage: Stage, function: str, calls: list[Call]) -> None:
    """Both directions: the calls are allowed; each code grant is used by some call."""
    assert calls, f"{function}: no AWS call recorded"
    policy = stage.policies[function]
    requests = stage.requests(calls)
    refused = sorted({str(r) for r in requests if not allowed(policy, r)})
    assert refused == [], f"{function}'s policy refuses calls its code makes: {refused}"

    spec = FUNCTIONS[function]
    grants = {g.sid: g for g in iam.grants(spec, stage.settings.stage_models, {})}
    unused = []
    for statement in policy["Statement"]:
        grant = grants[statement["Sid"]]
        if grant.allowance:
            assert grant.why, f"{grant.sid}: an allowance must say why"
            continue
        for action in statement["Action"]:
            for resource in statement["Resource"]:
                narrow = {**statement, "Action": [action], "Resource": [resource]}
                if not any(uses(narrow, request) for request in requests):
                    unused.append(f"{statement['Sid']}: {action} on {resource}")
    assert unused == [], f"{function} is granted what its code never calls: {unused}"


def test_api_function_needs_exactly_its_policy(stage: Stage) -> None:
    http = stage.client.http
    plan = {"monthly_budget_usd": "0.00015", "tokens_per_minute": 100_000}
    body = json.dumps({**plan, "requests_per_minute": 60})
    assert http.put("/admin/tenants/tenant-a/plan", headers=admin(), body=body).status_code == 200
    assert http.get("/admin/tenants/tenant-a/plan", headers=admin()).status_code == 200
    assert http.get("/usage/plan", headers=auth("tenant-a")).status_code == 200
    reply(stage.bedrock)  # costs 2/3 of the budget: the 50 % alert goes out
    chat = json.dumps({"prompt": "hi", "max_tokens": 64})
    response = http.post("/bedrock/chat", headers=auth("tenant-a"), body=chat)
    assert response.status_code == 200, response.json_body
    with stage.recorder.paused():  # Firehose gone: the event goes to the fallback location
        boto3.client("firehose", region_name=REGION).delete_delivery_stream(
            DeliveryStreamName=stage.outputs["FirehoseStreamName"]
        )
    reply(stage.bedrock, 10, 5)
    response = http.post("/bedrock/chat", headers=auth("tenant-b"), body=chat)
    assert response.status_code == 200, response.json_body
    assert http.get("/usage", headers=auth("tenant-a")).status_code == 200
    assert http.get("/admin/usage", headers=admin()).status_code == 200
    # A tenant with no budget left: its keyed call is refused and its key claim deleted.
    body = json.dumps({**plan, "monthly_budget_usd": "0", "requests_per_minute": 60})
    assert http.put("/admin/tenants/tenant-c/plan", headers=admin(), body=body).status_code == 200
    keyed = {**auth("tenant-c"), "Idempotency-Key": "order-42"}
    assert http.post("/bedrock/chat", headers=keyed, body=chat).status_code == 429
    # Every other model the stage offers, by a tenant whose plan allows them.
    offer = {"allowed_models": OFFER.split(","), "monthly_budget_usd": "10"}
    body = json.dumps({**plan, "requests_per_minute": 60, **offer})
    assert http.put("/admin/tenants/tenant-d/plan", headers=admin(), body=body).status_code == 200
    for model in OFFER.split(","):
        reply(stage.bedrock, 10, 5)
        chosen = json.dumps({"prompt": "hi", "max_tokens": 64, "model": model})
        response = http.post("/bedrock/chat", headers=auth("tenant-d"), body=chosen)
        assert response.status_code == 200, response.json_body

    check(stage, "api_handler", stage.recorder.take())


def test_partition_jobs_need_exactly_their_policy(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No grace period: each run deletes the generations the run before it retired.
    from_settings = PartitionJobConfig.from_settings.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        PartitionJobConfig,
        "from_settings",
        classmethod(lambda cls, settings: replace(from_settings(cls, settings), retention_s=0)),
    )
    now = datetime.now(UTC).replace(minute=10, second=0, microsecond=0)
    hour = now - timedelta(hours=1)
    s3 = boto3.client("s3", region_name=REGION)
    with stage.recorder.paused():
        for n, events in enumerate(([event(at=hour)], [event(at=hour)])):
            key = f"raw/{hour:%Y/%m/%d/%H}/stream-1-{n}"
            s3.put_object(Bucket=stage.bucket, Key=key, Body=ndjson(events))
        late = event(at=hour, event_id="fb-1")
        s3.put_object(
            Bucket=stage.bucket, Key=f"fallback/{hour:%Y/%m/%d/%H}/fb-1.json", Body=ndjson([late])
        )
        # A line that is no event (quarantined), and an event of three days ago that reached
        # this hour (re-filed under fallback/ for its own day).
        stray = event(at=hour - timedelta(days=3), event_id="stray-1")
        key = f"raw/{hour:%Y/%m/%d/%H}/stream-1-odd"
        s3.put_object(Bucket=stage.bucket, Key=key, Body=b"not an event\n" + ndjson([stray]))
    first = stage.schedule("maintain_usage_today", now)
    assert first["partitions"][0]["status"] == "written"
    with stage.recorder.paused():  # a late object: the next run replaces the partition
        key = f"raw/{hour:%Y/%m/%d/%H}/stream-1-late"
        s3.put_object(Bucket=stage.bucket, Key=key, Body=ndjson([event(at=hour)]))
    assert stage.schedule("maintain_usage_today", now)["partitions"][0]["events"] == 4
    stage.schedule("maintain_usage_today", now)  # nothing new: deletes the retired generation
    today = stage.recorder.take()
    quarantined = s3.list_objects_v2(Bucket=stage.bucket, Prefix="quarantine/")["KeyCount"]
    refiled = s3.list_objects_v2(Bucket=stage.bucket, Prefix="fallback/")["KeyCount"]
    assert (quarantined, refiled) == (1, 2)
    stage.schedule("maintain_usage_yesterday", now)
    yesterday = stage.recorder.take()
    stage.schedule("sweep_late_usage", now)
    sweep = stage.recorder.take()

    check(stage, "maintain_usage_today", today)
    for name, calls in (("maintain_usage_yesterday", yesterday), ("sweep_late_usage", sweep)):
        refused = [str(r) for r in stage.requests(calls) if not allowed(stage.policies[name], r)]
        assert refused == [], name
        assert stage.policies[name]["Statement"] == [
            {**s, "Resource": [r.replace("maintain_usage_today", name) for r in s["Resource"]]}
            for s in stage.policies["maintain_usage_today"]["Statement"]
        ]


def leave_a_stale_reservation(stage: Stage, budget: str = "0.00012") -> datetime:
    """A chat whose settle fails (its reservation stays open); when the repair may finish it.

    Each chat costs $0.0001 once repaired: 83 % of the default budget, so the repair sends the
    50 and 80 % alerts.
    """
    started = datetime.now(UTC)
    with stage.recorder.paused():
        plan = {"monthly_budget_usd": budget, "tokens_per_minute": 100_000}
        body = json.dumps({**plan, "requests_per_minute": 60})
        http = stage.client.http
        assert (
            http.put("/admin/tenants/tenant-a/plan", headers=admin(), body=body).status_code == 200
        )
        failing = SettleFailingClient()
        wiring.override(budget_store=DynamoBudgetStore(stage.settings.plans_table, client=failing))
        reply(stage.bedrock)
        chat = json.dumps({"prompt": "hi", "max_tokens": 64})
        assert http.post("/bedrock/chat", headers=auth("tenant-a"), body=chat).status_code == 200
        assert failing.failed == 1
        wiring.override(budget_store=DynamoBudgetStore(stage.settings.plans_table))
    stage.recorder.take()
    return started + timedelta(seconds=stage.settings.reservation_ttl_s + 60)


def test_repair_job_needs_exactly_its_policy(stage: Stage) -> None:
    # Three stale reservations whose events the repair finds in each place an event can be:
    # the curated generation, a raw object not curated yet, and the fallback location.
    budget = "0.00036"  # the three reservations fit; once repaired they spend 83 % of it
    later = leave_a_stale_reservation(stage, budget)
    with stage.recorder.paused():
        stage.schedule("maintain_usage_today", datetime.now(UTC))
    leave_a_stale_reservation(stage, budget)
    with stage.recorder.paused():
        # More refusals in a minute than are recorded one by one: the repair run writes
        # their aggregate (to fallback/: the stream is gone by then) and retires the counter.
        plan = json.dumps(
            {"monthly_budget_usd": "0", "tokens_per_minute": 100_000, "requests_per_minute": 60}
        )
        http = stage.client.http
        assert (
            http.put("/admin/tenants/tenant-c/plan", headers=admin(), body=plan).status_code == 200
        )
        chat = json.dumps({"prompt": "hi", "max_tokens": 64})
        for _ in range(stage.settings.refusal_events_per_minute + 2):
            assert (
                http.post("/bedrock/chat", headers=auth("tenant-c"), body=chat).status_code == 429
            )
    with stage.recorder.paused():  # Firehose gone: the third event goes to fallback/
        boto3.client("firehose", region_name=REGION).delete_delivery_stream(
            DeliveryStreamName=stage.outputs["FirehoseStreamName"]
        )
    leave_a_stale_reservation(stage, budget)
    report = stage.schedule("repair_budget_counters", later)
    assert (report["settled_from_events"], report["released"]) == (3, 0)

    check(stage, "repair_budget_counters", stage.recorder.take())


def test_the_repair_log_line_feeds_the_stale_reservations_alarm(
    stage: Stage, app_template: dict[str, Any]
) -> None:
    later = leave_a_stale_reservation(stage)
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(logs.JsonFormatter())  # the deployed functions' log format
    logger = logging.getLogger("chalicelib")
    logger.addHandler(handler)
    try:
        stage.schedule("repair_budget_counters", later)
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in written.getvalue().splitlines()]

    filters = [
        r["Properties"]
        for r in app_template["Resources"].values()
        if r["Type"] == "AWS::Logs::MetricFilter"
    ]
    assert filters
    stale = 0
    for metric_filter in filters:
        pattern = re.fullmatch(r'\{ \$\.(\w+) = "([^"]*)" \}', metric_filter["FilterPattern"])
        assert pattern is not None, metric_filter["FilterPattern"]
        field, value = pattern.groups()
        matching = [line for line in lines if line.get(field) == value]
        assert len(matching) == 1, f"the repair job logs no line matching {pattern.group(0)}"
        (transformation,) = metric_filter["MetricTransformations"]
        number = matching[0][transformation["MetricValue"].removeprefix("$.")]
        assert isinstance(number, int)
        stale += number
    assert stale == 1  # the alarm (sum >= 1) fires for the one stale reservation


def test_one_policy_per_function_and_every_function_described(
    app_template: dict[str, Any],
) -> None:
    functions = chalice_functions(app_template)
    assert set(functions) == set(FUNCTIONS)
    roles = [role for _, role in functions.values()]
    assert len(set(roles)) == len(roles)


def test_nothing_in_a_policy_reaches_another_stage(stage: Stage) -> None:
    other = Deployment("dev-x", REGION)
    bucket_x = f"arn:aws:s3:::bedrock-metering-dev-x-{ACCOUNT}-{REGION}"
    table_x = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/bedrock-metering-dev-x-plans"
    stream_x = (
        f"arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/bedrock-metering-dev-x-usage-events"
    )
    topic_x = f"arn:aws:sns:{REGION}:{ACCOUNT}:bedrock-metering-dev-x-budget-alerts"
    for name, policy in stage.policies.items():
        logs_x = (
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/"
            f"{other.function_name(name)}:log-stream:x"
        )
        for request in (
            Request("s3:GetObject", (f"{bucket_x}/raw/x",)),
            Request("s3:PutObject", (f"{bucket_x}/fallback/x",)),
            Request("s3:ListBucket", (bucket_x,), {"s3:prefix": "raw/"}),
            Request("dynamodb:UpdateItem", (table_x,)),
            Request("firehose:PutRecordBatch", (stream_x,)),
            Request("sns:Publish", (topic_x,)),
            Request("logs:PutLogEvents", (logs_x,)),
        ):
            assert not allowed(policy, request), f"{name} may {request}"


def test_the_api_cannot_touch_curated_data_or_partitions(stage: Stage) -> None:
    api = stage.policies["api_handler"]
    curated = f"arn:aws:s3:::{stage.bucket}/usage/year=2026/month=11/day=01/part.parquet"
    table = (
        f"arn:aws:glue:{REGION}:{ACCOUNT}:catalog",
        f"arn:aws:glue:{REGION}:{ACCOUNT}:database/bedrock_metering_db",
        f"arn:aws:glue:{REGION}:{ACCOUNT}:table/bedrock_metering_db/token_usage_logs",
    )
    for action in ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"):
        assert not allowed(api, Request(action, (curated,))), action
    for action in (
        "CreatePartition",
        "BatchCreatePartition",
        "UpdatePartition",
        "DeletePartition",
        "BatchDeletePartition",
        "UpdateTable",
        "DeleteTable",
    ):
        assert not allowed(api, Request(f"glue:{action}", table)), action
    model = f"arn:aws:bedrock:{REGION}::foundation-model/{stage.settings.model_id}"
    assert allowed(api, Request("bedrock:InvokeModel", (model,)))


def test_the_api_may_invoke_exactly_the_models_the_stage_offers(stage: Stage) -> None:
    api = stage.policies["api_handler"]

    def may_invoke(resource: str) -> bool:
        return allowed(api, Request("bedrock:InvokeModel", (resource,)))

    def foundation(model: str, region: str = REGION) -> str:
        return f"arn:aws:bedrock:{region}::foundation-model/{model}"

    def profile(profile_id: str) -> str:
        return f"arn:aws:bedrock:{REGION}:{ACCOUNT}:inference-profile/{profile_id}"

    base_35 = HAIKU_35_US.removeprefix("us.")
    for resource in (
        foundation(stage.settings.model_id),
        foundation(NOVA_MICRO),
        profile(HAIKU_35_US),
        foundation(base_35, "us-west-2"),  # where the US profile may route the call
    ):
        assert may_invoke(resource), resource
    for resource in (
        foundation("anthropic.claude-3-opus-20240229-v1:0"),  # priced, not offered
        foundation(stage.settings.model_id, "us-west-2"),  # the stage's model, elsewhere
        foundation(NOVA_MICRO, "eu-west-1"),
        profile(f"us.{stage.settings.model_id}"),  # a profile the stage does not call
        profile(f"eu.{base_35}"),
    ):
        assert not may_invoke(resource), resource
    # The model behind the US profile is grantable in any region (the profile routes there),
    # so IAM alone would let the API call it directly too; the app refuses that call (its
    # id is not one the stage offers) before any request is made.


def test_the_jobs_cannot_call_bedrock(stage: Stage) -> None:
    model = f"arn:aws:bedrock:{REGION}::foundation-model/{stage.settings.model_id}"
    for name, spec in FUNCTIONS.items():
        if spec.is_job:
            for action in ("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"):
                assert not allowed(stage.policies[name], Request(action, (model,))), name
            assert not any(
                str(a).startswith("bedrock:")
                for s in stage.policies[name]["Statement"]
                for a in s["Action"]
            )


def test_no_statement_grants_a_wildcard_action(app_template: dict[str, Any]) -> None:
    for name, (_, role) in chalice_functions(app_template).items():
        (policy,) = app_template["Resources"][role]["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]:
            for action in statement["Action"]:
                assert "*" not in action, f"{name}: {action}"
