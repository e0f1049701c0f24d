"""The local provisioner builds every resource of analytics_infra/template.yaml on moto."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from chalicelib.settings import OUTPUT_TO_ENV
from local.provision import (
    DEFAULT_TEMPLATE,
    ProvisionedStack,
    ProvisioningError,
    load_template,
    provision,
    provision_stack,
    resource_exists,
    verify,
)

REGION = "us-east-1"
ACCOUNT = "123456789012"


@pytest.fixture(scope="module")
def shared_session() -> Any:
    """One boto3 session for the module: it caches the service models clients are built from."""
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


@pytest.fixture
def session(shared_session: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The shared session on a fresh in-process moto, with dummy credentials in the env too."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield shared_session


@pytest.fixture
def stack(session: Any) -> ProvisionedStack:
    return provision_stack(session=session, stage="local", region=REGION)


def physical(stack: ProvisionedStack, logical_id: str) -> str:
    return stack.resources[logical_id].physical_id


def test_every_template_resource_exists_on_the_endpoint(
    stack: ProvisionedStack, session: Any
) -> None:
    template = load_template(DEFAULT_TEMPLATE)
    assert set(stack.resources) == set(template["Resources"])
    for logical_id, definition in template["Resources"].items():
        resource = stack.resources[logical_id]
        assert resource.resource_type == definition["Type"]
        assert resource_exists(resource, session, region=REGION), logical_id
    assert verify(stack, session) == []


def test_outputs_are_the_mapped_names_with_local_values(stack: ProvisionedStack) -> None:
    outputs = stack.outputs
    assert list(outputs) == list(OUTPUT_TO_ENV)
    assert outputs["AnalyticsBucketName"] == f"bedrock-metering-local-{ACCOUNT}-{REGION}"
    assert outputs["UserPoolArn"] == (
        f"arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/{outputs['UserPoolId']}"
    )
    assert outputs["GlueDatabaseName"] == "bedrock_metering_db"
    assert outputs["GlueTableName"] == "token_usage_logs"
    assert outputs["AthenaWorkGroupName"] == "bedrock-metering-workgroup"
    assert outputs["AlertsTopicArn"].startswith(f"arn:aws:sns:{REGION}:{ACCOUNT}:")


def test_user_pool_client_and_admins_group(stack: ProvisionedStack, session: Any) -> None:
    cognito = session.client("cognito-idp")
    pool_id = stack.outputs["UserPoolId"]
    pool = cognito.describe_user_pool(UserPoolId=pool_id)["UserPool"]
    (tenant,) = [a for a in pool["SchemaAttributes"] if a["Name"] == "custom:tenant_id"]
    assert tenant["Mutable"] is False
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert pool["Policies"]["PasswordPolicy"]["MinimumLength"] == 8

    client = cognito.describe_user_pool_client(
        UserPoolId=pool_id, ClientId=stack.outputs["UserPoolClientId"]
    )["UserPoolClient"]
    assert set(client["ExplicitAuthFlows"]) == {
        "ALLOW_USER_PASSWORD_AUTH",
        "ALLOW_REFRESH_TOKEN_AUTH",
    }
    assert "ClientSecret" not in client
    assert "custom:tenant_id" in client["ReadAttributes"]
    assert "custom:tenant_id" not in client["WriteAttributes"]

    group = cognito.get_group(UserPoolId=pool_id, GroupName="admins")["Group"]
    assert group["Precedence"] == 0


def test_bucket_is_private_encrypted_versioned_with_lifecycle(
    stack: ProvisionedStack, session: Any
) -> None:
    s3 = session.client("s3")
    bucket = stack.outputs["AnalyticsBucketName"]
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert set(block.values()) == {True}
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    athena = next(r for r in rules if r["Filter"].get("Prefix") == "athena-results/")
    assert athena["Expiration"] == {"Days": 30}
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_delivery_stream_writes_raw_ndjson_into_the_bucket(
    stack: ProvisionedStack, session: Any
) -> None:
    firehose = session.client("firehose")
    bucket = stack.outputs["AnalyticsBucketName"]
    role = session.client("iam").get_role(RoleName=physical(stack, "FirehoseDeliveryRole"))["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "firehose.amazonaws.com"
    }
    description = firehose.describe_delivery_stream(
        DeliveryStreamName=stack.outputs["FirehoseStreamName"]
    )["DeliveryStreamDescription"]
    assert description["DeliveryStreamType"] == "DirectPut"
    (destination,) = description["Destinations"]
    s3_destination = destination["ExtendedS3DestinationDescription"]
    assert s3_destination["BucketARN"] == f"arn:aws:s3:::{bucket}"
    assert s3_destination["RoleARN"] == role["Arn"]
    assert s3_destination["Prefix"] == "raw/"
    assert s3_destination["CompressionFormat"] == "UNCOMPRESSED"

    firehose.put_record(
        DeliveryStreamName=stack.outputs["FirehoseStreamName"],
        Record={"Data": b'{"event_id": "e1"}\n'},
    )
    keys = [o["Key"] for o in session.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 1
    assert re.match(r"raw/\d{4}/\d{2}/\d{2}/\d{2}/", keys[0])


def test_glue_catalog_and_athena_workgroup(stack: ProvisionedStack, session: Any) -> None:
    glue = session.client("glue")
    assert glue.get_database(Name="bedrock_metering_db")["Database"]["Name"]
    table = glue.get_table(DatabaseName="bedrock_metering_db", Name="token_usage_logs")["Table"]
    assert [k["Name"] for k in table["PartitionKeys"]] == ["year", "month", "day"]
    storage = table["StorageDescriptor"]
    assert storage["Location"] == f"s3://{stack.outputs['AnalyticsBucketName']}/usage/"
    assert storage["Columns"][0] == {"Name": "event_id", "Type": "string"}
    assert {"Name": "cost_usd", "Type": "decimal(38,12)"} in storage["Columns"]

    group = session.client("athena").get_work_group(WorkGroup="bedrock-metering-workgroup")
    config = group["WorkGroup"]["Configuration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["BytesScannedCutoffPerQuery"] == 10 * 1024**3  # one query costs at most this
    assert config["ResultConfiguration"]["OutputLocation"] == (
        f"s3://{stack.outputs['AnalyticsBucketName']}/athena-results/"
    )


def test_plans_table_keys_ttl_and_pitr(stack: ProvisionedStack, session: Any) -> None:
    dynamodb = session.client("dynamodb")
    name = stack.outputs["PlansTableName"]
    table = dynamodb.describe_table(TableName=name)["Table"]
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    backups = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"


def test_alerts_topic_exists(stack: ProvisionedStack, session: Any) -> None:
    arn = stack.outputs["AlertsTopicArn"]
    attributes = session.client("sns").get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attributes["DisplayName"] == "Bedrock metering budget alerts"


def test_provisioning_twice_reuses_what_exists(stack: ProvisionedStack, session: Any) -> None:
    again = provision_stack(session=session, stage="local", region=REGION)

    assert again.outputs == stack.outputs
    cognito = session.client("cognito-idp")
    assert len(cognito.list_user_pools(MaxResults=60)["UserPools"]) == 1
    clients = cognito.list_user_pool_clients(UserPoolId=stack.outputs["UserPoolId"])
    assert len(clients["UserPoolClients"]) == 1
    assert verify(again, session) == []


def test_a_deleted_resource_is_reported_missing(stack: ProvisionedStack, session: Any) -> None:
    session.client("sns").delete_topic(TopicArn=stack.outputs["AlertsTopicArn"])
    session.client("glue").delete_table(DatabaseName="bedrock_metering_db", Name="token_usage_logs")
    session.client("athena").delete_work_group(WorkGroup="bedrock-metering-workgroup")
    session.client("cloudwatch").delete_dashboards(
        DashboardNames=[physical(stack, "MeteringDashboard")]
    )
    session.client("logs").delete_log_stream(
        logGroupName=stack.resources["FirehoseLogStream"].parent_id,
        logStreamName=physical(stack, "FirehoseLogStream"),
    )

    assert sorted(verify(stack, session)) == [
        "AlertsTopic",
        "AthenaWorkGroup",
        "FirehoseLogStream",
        "MeteringDashboard",
        "UsageTable",
    ]


def test_metering_dashboard_searches_the_stages_call_metrics(
    stack: ProvisionedStack, session: Any
) -> None:
    name = physical(stack, "MeteringDashboard")
    assert name == "bedrock-metering-local"
    body = json.loads(
        session.client("cloudwatch").get_dashboard(DashboardName=name)["DashboardBody"]
    )
    expressions = [
        metric[0]["expression"]
        for widget in body["widgets"]
        if widget["type"] == "metric"
        for metric in widget["properties"]["metrics"]
    ]
    assert expressions
    assert all('stage="local"' in expression for expression in expressions)
    assert {w["properties"].get("region") for w in body["widgets"] if w["type"] == "metric"} == {
        REGION
    }


ALARMS = """\
  Topic:
    Type: AWS::SNS::Topic
  HighErrorRate:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmName: !Sub "${AWS::StackName}-error-rate"
      AlarmDescription: More than 5% of model calls failed
      ComparisonOperator: GreaterThanThreshold
      EvaluationPeriods: 3
      DatapointsToAlarm: 2
      Threshold: 5
      TreatMissingData: notBreaching
      AlarmActions: [!Ref Topic]
      OKActions: [!Ref Topic]
      Metrics:
        - Id: rate
          Expression: 100 * errors / MAX([errors, requests])
          Label: error rate
          ReturnData: true
        - Id: errors
          ReturnData: false
          MetricStat:
            Metric:
              Namespace: BedrockSaaSMetering
              MetricName: Errors
              Dimensions:
                - {Name: stage, Value: local}
            Period: 300
            Stat: Sum
        - Id: requests
          ReturnData: "false"
          MetricStat:
            Metric: {Namespace: BedrockSaaSMetering, MetricName: Requests}
            Period: "300"
            Stat: Sum
            Unit: Count
  SlowModel:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Namespace: BedrockSaaSMetering
      MetricName: Latency
      Dimensions:
        - Name: stage
          Value: local
      ExtendedStatistic: p95
      Period: "60"
      EvaluationPeriods: "5"
      Threshold: "2500.5"
      ComparisonOperator: GreaterThanOrEqualToThreshold
      Unit: Milliseconds
      ActionsEnabled: false
"""


def test_alarms_single_metric_and_metric_math_are_created_as_declared(
    session: Any, tmp_path: Path
) -> None:
    stack = provision_stack(write_template(tmp_path, ALARMS), session=session, stack_name="s")
    cloudwatch = session.client("cloudwatch")
    alarms = {
        a["AlarmName"]: a
        for a in cloudwatch.describe_alarms(AlarmTypes=["MetricAlarm"])["MetricAlarms"]
    }
    math = alarms["s-error-rate"]
    assert stack.resources["HighErrorRate"].physical_id == "s-error-rate"
    assert stack.resources["HighErrorRate"].attributes["Arn"] == math["AlarmArn"]
    assert (math["EvaluationPeriods"], math["DatapointsToAlarm"], math["Threshold"]) == (3, 2, 5.0)
    assert math["TreatMissingData"] == "notBreaching"
    topic = stack.resources["Topic"].physical_id
    assert math["AlarmActions"] == [topic]
    assert math["OKActions"] == [topic]
    queries = {q["Id"]: q for q in math["Metrics"]}
    assert queries["rate"]["Expression"] == "100 * errors / MAX([errors, requests])"
    assert queries["rate"]["ReturnData"] is True
    assert queries["requests"]["ReturnData"] is False
    stat = queries["errors"]["MetricStat"]
    assert (stat["Metric"]["MetricName"], stat["Period"], stat["Stat"]) == ("Errors", 300, "Sum")
    assert stat["Metric"]["Dimensions"] == [{"Name": "stage", "Value": "local"}]

    slow = alarms[physical(stack, "SlowModel")]
    assert physical(stack, "SlowModel") == "s-SlowModel"  # generated, as CloudFormation would
    assert (slow["ExtendedStatistic"], slow["Period"], slow["Threshold"]) == ("p95", 60, 2500.5)
    assert (slow["Unit"], slow["ActionsEnabled"]) == ("Milliseconds", False)
    assert slow["Dimensions"] == [{"Name": "stage", "Value": "local"}]

    assert verify(stack, session) == []
    cloudwatch.delete_alarms(AlarmNames=["s-error-rate"])
    assert verify(stack, session) == ["HighErrorRate"]
    again = provision_stack(write_template(tmp_path, ALARMS), session=session, stack_name="s")
    assert verify(again, session) == []


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        (
            "MetricName: Errors\n      Namespace: N\n      Statistic: Sum\n      Period: 60\n"
            "      EvaluationPeriods: 1\n      ComparisonOperator: GreaterThanThreshold",
            "Threshold",
        ),
        (
            "MetricName: Errors\n      Namespace: N\n      Statistic: Sum\n"
            "      ExtendedStatistic: p99\n      Period: 60\n      Threshold: 1\n"
            "      EvaluationPeriods: 1\n      ComparisonOperator: GreaterThanThreshold",
            "one of Statistic or ExtendedStatistic",
        ),
        (
            "Threshold: 1\n      EvaluationPeriods: 1\n      ComparisonOperator: LessThanThreshold",
            "either MetricName or Metrics",
        ),
        (
            "Threshold: 1\n      EvaluationPeriods: 1\n"
            "      ComparisonOperator: LessThanThreshold\n"
            "      Metrics: [{Id: a, Expression: b, MetricStat: {}}]",
            "exactly one of Expression or MetricStat",
        ),
        (
            "Threshold: 1\n      EvaluationPeriods: 1\n"
            "      ComparisonOperator: LessThanThreshold\n"
            "      Tags: []",
            "Tags",
        ),
    ],
    ids=["no-threshold", "two-statistics", "no-metric", "bad-metric-query", "unknown-property"],
)
def test_an_alarm_cloudformation_would_refuse_is_refused(
    session: Any, tmp_path: Path, properties: str, message: str
) -> None:
    path = write_template(
        tmp_path, f"  A:\n    Type: AWS::CloudWatch::Alarm\n    Properties:\n      {properties}\n"
    )
    with pytest.raises(ProvisioningError, match=message):
        provision(path, session=session)
    assert session.client("cloudwatch").describe_alarms()["MetricAlarms"] == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("'not json'", "not JSON"),
        ("'{\"widgets\": []}'", "non-empty 'widgets'"),
        ('\'{"widgets": [{"type": "metric"}]}\'', "widget 0 has no 'properties'"),
    ],
)
def test_a_dashboard_cloudwatch_would_refuse_is_refused(
    session: Any, tmp_path: Path, body: str, message: str
) -> None:
    path = write_template(
        tmp_path,
        "  D:\n    Type: AWS::CloudWatch::Dashboard\n    Properties:\n"
        f"      DashboardBody: {body}\n",
    )
    with pytest.raises(ProvisioningError, match=message):
        provision(path, session=session)
    assert session.client("cloudwatch").list_dashboards()["DashboardEntries"] == []


def test_other_stage_gets_its_own_names(session: Any) -> None:
    outputs = provision(session=session, stage="qa", region=REGION)
    assert outputs["AnalyticsBucketName"] == f"bedrock-metering-qa-{ACCOUNT}-{REGION}"
    assert outputs["PlansTableName"] == "bedrock-metering-qa-plans"


def write_template(tmp_path: Path, resources: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text("Resources:\n" + resources, encoding="utf-8")
    return path


def test_unknown_resource_type_is_refused_before_anything_is_created(
    session: Any, tmp_path: Path
) -> None:
    path = write_template(
        tmp_path,
        "  Topic:\n    Type: AWS::SNS::Topic\n"
        "  Fn:\n    Type: AWS::Lambda::Function\n    Properties: {}\n",
    )
    with pytest.raises(ProvisioningError, match=r"Fn: resource type AWS::Lambda::Function"):
        provision(path, session=session)
    assert session.client("sns").list_topics()["Topics"] == []


def test_unknown_property_is_refused(session: Any, tmp_path: Path) -> None:
    path = write_template(
        tmp_path,
        "  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      FifoTopic: true\n",
    )
    with pytest.raises(ProvisioningError, match="FifoTopic"):
        provision(path, session=session)


def test_unsupported_intrinsic_function_is_refused(session: Any, tmp_path: Path) -> None:
    path = write_template(
        tmp_path,
        "  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n"
        "      TopicName: {'Fn::ImportValue': other-stack-name}\n",
    )
    with pytest.raises(ProvisioningError, match="Fn::ImportValue"):
        provision(path, session=session)


def test_intrinsics_and_dependency_order(session: Any, tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        "Parameters:\n  Stage: {Type: String, Default: dev}\n"
        "Resources:\n"
        "  Second:\n    Type: AWS::SNS::Topic\n    DependsOn: First\n    Properties:\n"
        "      TopicName: !Join ['-', [!Select [1, [x, !GetAtt First.TopicName]], two]]\n"
        "      DisplayName: !Sub ['${Stage} in ${AWS::Region} for ${S}',"
        " {S: !Ref AWS::StackName}]\n"
        "  First:\n    Type: AWS::SNS::Topic\n    Properties:\n"
        "      TopicName: !Sub '${Stage}-one'\n"
        "      DisplayName: !Sub ['${!Literal}', {}]\n"
        "Outputs:\n  Second: {Value: !Ref Second}\n",
        encoding="utf-8",
    )
    stack = provision_stack(path, stage="qa", session=session)

    assert stack.outputs == {"Second": f"arn:aws:sns:{REGION}:{ACCOUNT}:qa-one-two"}
    sns = session.client("sns")
    display = {
        logical_id: sns.get_topic_attributes(TopicArn=resource.physical_id)["Attributes"][
            "DisplayName"
        ]
        for logical_id, resource in stack.resources.items()
    }
    assert display == {"First": "${Literal}", "Second": "qa in us-east-1 for bedrock-metering-qa"}


def test_bad_parameter_value_is_refused(session: Any) -> None:
    with pytest.raises(ProvisioningError, match="Stage='Not Valid'"):
        provision(session=session, stage="Not Valid")


def test_user_signs_in_with_the_provisioned_client_and_id_token_carries_tenant(
    stack: ProvisionedStack, session: Any
) -> None:
    cognito = session.client("cognito-idp")
    pool_id, client_id = stack.outputs["UserPoolId"], stack.outputs["UserPoolClientId"]
    cognito.admin_create_user(
        UserPoolId=pool_id,
        Username="tenant1-user1",
        UserAttributes=[
            {"Name": "email", "Value": "user1@tenant1.example"},
            {"Name": "custom:tenant_id", "Value": "tenant-001"},
        ],
        TemporaryPassword="Temp#Pass1",
        MessageAction="SUPPRESS",
    )
    cognito.admin_set_user_password(
        UserPoolId=pool_id, Username="tenant1-user1", Password="Real#Pass1", Permanent=True
    )

    result = cognito.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "tenant1-user1", "PASSWORD": "Real#Pass1"},
    )["AuthenticationResult"]

    claims = jwt.decode(result["IdToken"], options={"verify_signature": False})
    assert claims["custom:tenant_id"] == "tenant-001"
    assert claims["token_use"] == "id"
    assert claims["aud"] == client_id
    assert result["ExpiresIn"] == 3600


def test_moto_server_issues_id_tokens_verifiable_against_its_jwks() -> None:
    """What the local stack does: provision over HTTP, sign in, verify with the served JWKS."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        outputs = provision(session=session, endpoint_url=endpoint)
        pool_id, client_id = outputs["UserPoolId"], outputs["UserPoolClientId"]
        cognito = session.client("cognito-idp", endpoint_url=endpoint)
        cognito.admin_create_user(
            UserPoolId=pool_id,
            Username="alice",
            UserAttributes=[{"Name": "custom:tenant_id", "Value": "tenant-002"}],
            MessageAction="SUPPRESS",
        )
        cognito.admin_set_user_password(
            UserPoolId=pool_id, Username="alice", Password="Real#Pass1", Permanent=True
        )
        token = cognito.initiate_auth(
            ClientId=client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": "alice", "PASSWORD": "Real#Pass1"},
        )["AuthenticationResult"]["IdToken"]

        jwks_url = f"{endpoint}/{pool_id}/.well-known/jwks.json"
        with urllib.request.urlopen(jwks_url, timeout=10) as response:
            jwks = json.load(response)
        (key,) = [k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"]]
        claims = jwt.decode(
            token,
            jwt.PyJWK(key).key,
            algorithms=["RS256"],
            audience=client_id,
            issuer=f"https://cognito-idp.{REGION}.amazonaws.com/{pool_id}",
        )
        assert claims["custom:tenant_id"] == "tenant-002"
    finally:
        server.stop()
