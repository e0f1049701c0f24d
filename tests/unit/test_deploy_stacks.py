"""The analytics template split into the data stack (kept) and the infra stack (imports it)."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.settings import OUTPUT_TO_ENV
from deploy import cfn, stacks
from deploy.errors import DeployError
from deploy.naming import Deployment

DEV = Deployment("dev", "ap-northeast-2")
KEPT = {"UserPool", "AnalyticsBucket", "PlansTable"}  # users, usage data, budgets


@pytest.fixture(scope="module")
def split() -> stacks.InfraTemplates:
    return stacks.split(DEV)


def own_references(template: dict[str, Any]) -> set[str]:
    """What the template refers to that is neither its own resource, parameter nor pseudo."""
    names = set(template["Resources"]) | set(template.get("Parameters", {}))
    return {
        name
        for name, _ in cfn.references([template["Resources"], template["Outputs"]])
        if name not in names and not name.startswith("AWS::")
    }


def imports(value: Any) -> set[str]:
    if isinstance(value, list):
        return {name for item in value for name in imports(item)}
    if isinstance(value, dict):
        if set(value) == {"Fn::ImportValue"}:
            return {str(value["Fn::ImportValue"])}
        return {name for item in value.values() for name in imports(item)}
    return set()


def test_what_a_stage_must_not_lose_is_in_the_data_stack(split: stacks.InfraTemplates) -> None:
    data = split.data["Resources"]
    assert set(data) >= KEPT
    assert {"UserPoolClient", "AdminsGroup", "GlueDatabase", "UsageTable"} <= set(data)
    for logical_id in KEPT:
        assert data[logical_id]["DeletionPolicy"] == "RetainExceptOnCreate"
        assert data[logical_id]["UpdateReplacePolicy"] == "Retain"
    assert "Metadata" not in data["UserPool"]  # the marker is not deployed


def test_every_template_resource_is_in_exactly_one_stack(split: stacks.InfraTemplates) -> None:
    source = set(cfn.load(stacks.TEMPLATE)["Resources"])
    data, infra = set(split.data["Resources"]), set(split.infra["Resources"])
    assert not data & infra
    assert data | infra == source | {stacks.ARTIFACTS_BUCKET}


def test_the_stacks_refer_to_each_other_only_through_exports(
    split: stacks.InfraTemplates,
) -> None:
    assert own_references(split.data) == set()
    assert own_references(split.infra) == set()
    assert imports(split.data) == set()
    exported = {o["Export"]["Name"] for o in split.data["Outputs"].values()}
    assert imports(split.infra) <= exported
    assert "bedrock-metering-dev-AnalyticsBucketArn" in imports(split.infra)


def test_every_value_the_app_needs_is_exported_for_this_stage(
    split: stacks.InfraTemplates,
) -> None:
    assert set(OUTPUT_TO_ENV) <= set(split.exports)
    assert all(name.startswith("bedrock-metering-dev-") for name in split.exports.values())
    assert stacks.ARTIFACTS_OUTPUT in split.infra["Outputs"]
    assert "Export" not in split.infra["Outputs"][stacks.ARTIFACTS_OUTPUT]


def test_the_stage_parameter_is_pinned_to_the_rendered_stage(
    split: stacks.InfraTemplates,
) -> None:
    for template in (split.data, split.infra):
        assert template["Parameters"]["Stage"]["AllowedValues"] == ["dev"]
    assert "GlueDatabaseName" in split.data["Parameters"]
    assert "AthenaWorkGroupName" in split.infra["Parameters"]


def test_a_data_resource_that_depends_on_infra_is_refused() -> None:
    template = cfn.load(stacks.TEMPLATE)
    template["Resources"]["PlansTable"]["Properties"]["TableName"] = {"Ref": "AlertsTopic"}
    with pytest.raises(DeployError, match="PlansTable is in the data stack but refers to"):
        stacks.split(DEV, template)


def test_retained_resources_are_found_by_their_names() -> None:
    names = stacks.retained_names(DEV, "123456789012")
    assert names == {
        "UserPool": ("AWS::Cognito::UserPool", "bedrock-metering-dev-users"),
        "AnalyticsBucket": (
            "AWS::S3::Bucket",
            "bedrock-metering-dev-123456789012-ap-northeast-2",
        ),
        "PlansTable": ("AWS::DynamoDB::Table", "bedrock-metering-dev-plans"),
        "CurationStateTable": ("AWS::DynamoDB::Table", "bedrock-metering-dev-curation"),
    }
