"""The analytics CloudFormation template: lint-clean, the contracts the app relies on, outputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file

from chalicelib.settings import OUTPUT_TO_ENV
from local.provision import (
    DEFAULT_TEMPLATE,
    SUPPORTED_RESOURCE_TYPES,
    ProvisioningError,
    load_template,
)

EXPECTED_OUTPUTS = [
    "UserPoolId",
    "UserPoolArn",
    "UserPoolClientId",
    "AnalyticsBucketName",
    "FirehoseStreamName",
    "GlueDatabaseName",
    "GlueTableName",
    "AthenaWorkGroupName",
    "PlansTableName",
    "CurationTableName",
    "AlertsTopicArn",
]

EXPECTED_COLUMNS = [
    ("event_id", "string"),
    ("schema_version", "int"),
    ("timestamp", "string"),
    ("tenant_id", "string"),
    ("user_id", "string"),
    ("model_id", "string"),
    ("input_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("cache_read_input_tokens", "bigint"),
    ("cache_write_input_tokens", "bigint"),
    ("total_tokens", "bigint"),
    ("status", "string"),
    ("error_code", "string"),
    ("latency_ms", "bigint"),
    ("cost_usd", "decimal(38,12)"),
    ("price_version", "string"),
    ("request_id", "string"),
    ("stage", "string"),
    ("request_count", "bigint"),
]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(DEFAULT_TEMPLATE)


def properties(template: dict[str, Any], resource_type: str) -> dict[str, Any]:
    """The Properties of the template's only resource of that type."""
    found = [r for r in template["Resources"].values() if r["Type"] == resource_type]
    assert len(found) == 1, f"expected one {resource_type}, found {len(found)}"
    props: dict[str, Any] = found[0]["Properties"]
    return props


def test_template_parses_and_every_resource_type_is_provisionable(
    template: dict[str, Any],
) -> None:
    types = {resource["Type"] for resource in template["Resources"].values()}
    assert types <= SUPPORTED_RESOURCE_TYPES


def test_cfn_lint_reports_nothing_not_even_informational() -> None:
    matches = lint_file(
        DEFAULT_TEMPLATE,
        config=ManualArgs(include_checks=["I"], regions=["us-east-1", "eu-west-1"]),
    )
    assert [str(match) for match in matches] == []


def test_tenant_id_is_immutable_and_the_client_cannot_write_it(template: dict[str, Any]) -> None:
    pool = properties(template, "AWS::Cognito::UserPool")
    (tenant,) = [attr for attr in pool["Schema"] if attr["Name"] == "tenant_id"]
    assert tenant["AttributeDataType"] == "String"
    assert tenant["Mutable"] is False
    client = properties(template, "AWS::Cognito::UserPoolClient")
    assert "custom:tenant_id" in client["ReadAttributes"]
    assert "custom:tenant_id" not in client["WriteAttributes"]


def test_user_pool_is_admin_created_with_the_reference_password_policy(
    template: dict[str, Any],
) -> None:
    pool = properties(template, "AWS::Cognito::UserPool")
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert "UsernameAttributes" not in pool  # users sign in with a username
    assert pool["Policies"]["PasswordPolicy"] == {
        "MinimumLength": 8,
        "RequireUppercase": True,
        "RequireLowercase": True,
        "RequireNumbers": True,
        "RequireSymbols": True,
        "TemporaryPasswordValidityDays": 7,
    }
    group = properties(template, "AWS::Cognito::UserPoolGroup")
    assert group["GroupName"] == "admins"


def test_app_client_is_public_password_auth_with_one_hour_tokens(template: dict[str, Any]) -> None:
    client = properties(template, "AWS::Cognito::UserPoolClient")
    assert client["GenerateSecret"] is False
    assert sorted(client["ExplicitAuthFlows"]) == [
        "ALLOW_REFRESH_TOKEN_AUTH",
        "ALLOW_USER_PASSWORD_AUTH",
    ]
    assert (client["IdTokenValidity"], client["AccessTokenValidity"]) == (1, 1)
    assert client["TokenValidityUnits"]["IdToken"] == "hours"
    assert client["TokenValidityUnits"]["AccessToken"] == "hours"


def test_glue_table_columns_and_partitions_are_the_contract(template: dict[str, Any]) -> None:
    table = properties(template, "AWS::Glue::Table")["TableInput"]
    storage = table["StorageDescriptor"]
    assert table["Name"] == "token_usage_logs"
    assert table["TableType"] == "EXTERNAL_TABLE"
    assert [(c["Name"], c["Type"]) for c in storage["Columns"]] == EXPECTED_COLUMNS
    assert [(k["Name"], k["Type"]) for k in table["PartitionKeys"]] == [
        ("year", "string"),
        ("month", "string"),
        ("day", "string"),
    ]
    serde = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert storage["SerdeInfo"]["SerializationLibrary"] == serde
    assert storage["InputFormat"].endswith("MapredParquetInputFormat")
    assert storage["OutputFormat"].endswith("MapredParquetOutputFormat")
    assert storage["Location"] == {"Fn::Sub": "s3://${AnalyticsBucket}/usage/"}


def test_firehose_writes_plain_ndjson_under_raw_with_the_default_layout(
    template: dict[str, Any],
) -> None:
    stream = properties(template, "AWS::KinesisFirehose::DeliveryStream")
    destination = stream["ExtendedS3DestinationConfiguration"]
    assert stream["DeliveryStreamType"] == "DirectPut"
    assert destination["Prefix"] == "raw/"
    assert "!{" not in json.dumps(destination)  # no prefix expressions anywhere
    assert destination["BufferingHints"] == {"IntervalInSeconds": 60, "SizeInMBs": 5}
    assert destination["CompressionFormat"] == "UNCOMPRESSED"
    assert destination["BucketARN"] == {"Fn::GetAtt": ["AnalyticsBucket", "Arn"]}


def test_bucket_is_private_versioned_encrypted_and_expires_athena_results(
    template: dict[str, Any],
) -> None:
    bucket = properties(template, "AWS::S3::Bucket")
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert {"Prefix": "athena-results/", "ExpirationInDays": 30}.items() <= rules[0].items()


def test_plans_table_has_generic_keys_ttl_and_pitr(template: dict[str, Any]) -> None:
    table = template["Resources"]["PlansTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_athena_workgroup_enforces_results_in_the_bucket(template: dict[str, Any]) -> None:
    group = properties(template, "AWS::Athena::WorkGroup")
    config = group["WorkGroupConfiguration"]
    assert group["Name"] == {"Ref": "AthenaWorkGroupName"}
    assert template["Parameters"]["AthenaWorkGroupName"]["Default"] == "bedrock-metering-workgroup"
    assert template["Parameters"]["GlueDatabaseName"]["Default"] == "bedrock_metering_db"
    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["EngineVersion"] == {"SelectedEngineVersion": "AUTO"}
    assert config["ResultConfiguration"]["OutputLocation"] == {
        "Fn::Sub": "s3://${AnalyticsBucket}/athena-results/"
    }


def test_outputs_are_exactly_the_mapped_names(template: dict[str, Any]) -> None:
    assert list(template["Outputs"]) == EXPECTED_OUTPUTS
    assert list(OUTPUT_TO_ENV) == EXPECTED_OUTPUTS


def test_short_form_tags_expand_to_long_form(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "Resources:\n"
        "  T:\n"
        "    Type: AWS::SNS::Topic\n"
        "    Properties:\n"
        "      TopicName: !Join ['-', [!Ref AWS::Region, !Select [0, [a, b]]]]\n"
        "      DisplayName: !Sub ['${X}', {X: !GetAtt [Other, Arn]}]\n",
        encoding="utf-8",
    )
    props = load_template(path)["Resources"]["T"]["Properties"]
    assert props["TopicName"] == {
        "Fn::Join": ["-", [{"Ref": "AWS::Region"}, {"Fn::Select": [0, ["a", "b"]]}]]
    }
    assert props["DisplayName"] == {"Fn::Sub": ["${X}", {"X": {"Fn::GetAtt": ["Other", "Arn"]}}]}


def test_unsupported_short_form_tag_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("Resources:\n  T:\n    Condition: !If [C, a, b]\n", encoding="utf-8")
    with pytest.raises(ProvisioningError, match="unsupported CloudFormation tag !If"):
        load_template(path)


def test_short_form_tag_of_the_wrong_shape_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("Resources:\n  T:\n    Type: !Ref [a, b]\n", encoding="utf-8")
    with pytest.raises(ProvisioningError, match=r"!Ref takes a scalar \(line 3\)"):
        load_template(path)


def value_types(value: Any) -> set[type]:
    """The exact types of a value and of everything in it, keys included."""
    if isinstance(value, dict):
        inner = [*value, *value.values()]
    elif isinstance(value, list):
        inner = value
    else:
        inner = []
    return {type(value)}.union(*(value_types(item) for item in inner))


def test_loaded_template_is_plain_data(template: dict[str, Any]) -> None:
    # cfn-lint decodes into marked str/dict/list subclasses, which do not even copy.
    assert value_types(template) <= {dict, list, str, int, float, bool}
    assert copy.copy(template["Resources"]["UsageTable"]["Type"]) == "AWS::Glue::Table"
