"""The deployed stages' IAM policies grant the analytics code what it calls, on its resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from local.provision import load_template

ROOT = Path(__file__).resolve().parents[2]


def statements(stage: str) -> dict[str, dict[str, Any]]:
    policy = json.loads((ROOT / ".chalice" / f"policy-{stage}.json").read_text())
    return {s["Sid"]: s for s in policy["Statement"]}


def as_list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_partition_job_may_read_sources_and_replace_only_curated_objects(stage: str) -> None:
    grants = statements(stage)
    bucket = f"arn:aws:s3:::bedrock-metering-{stage}-*"
    reads = as_list(grants["AnalyticsReadUsageData"]["Resource"])
    assert {f"{bucket}/raw/*", f"{bucket}/fallback/*", f"{bucket}/usage/*"} <= set(reads)
    writes = grants["AnalyticsWriteCuratedUsage"]
    assert set(as_list(writes["Resource"])) == {f"{bucket}/usage/*", f"{bucket}/manifests/usage/*"}
    assert "s3:DeleteObject" in writes["Action"]  # overwrite_partitions deletes the old files
    listing = grants["AnalyticsListUsageData"]
    assert listing["Resource"] == bucket
    assert "raw/*" in listing["Condition"]["StringLike"]["s3:prefix"]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_glue_and_athena_grants_name_the_templates_database_table_and_workgroup(
    stage: str,
) -> None:
    template = load_template()
    database = template["Parameters"]["GlueDatabaseName"]["Default"]
    workgroup = template["Parameters"]["AthenaWorkGroupName"]["Default"]
    table = template["Resources"]["UsageTable"]["Properties"]["TableInput"]["Name"]
    grants = statements(stage)
    assert f"arn:aws:glue:*:*:table/{database}/{table}" in grants["AnalyticsCatalog"]["Resource"]
    assert "glue:BatchCreatePartition" in grants["AnalyticsCatalog"]["Action"]
    assert grants["AnalyticsQueries"]["Resource"] == f"arn:aws:athena:*:*:workgroup/{workgroup}"
    assert "athena:StartQueryExecution" in grants["AnalyticsQueries"]["Action"]
