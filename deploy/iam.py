"""What each function may do on AWS: one definition, rendered per function and stage.

Every grant names the code that needs it, or (`allowance`) why it is granted though no boto3
call of the code makes it: Athena works with its caller's permissions, the Lambda runtime
writes the logs. Resources are `Fn::Sub` texts over the pseudo parameters and the variables
below, each an output of the stage's data or infra stack, so every ARN names one resource of
one stage: `dev` can never reach `dev-x`'s bucket, table, stream, topic or logs.
tests/functional/test_deploy_iam.py runs each function's code on moto and checks both ways.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from deploy import cfn
from deploy.errors import DeployError
from deploy.functions import FunctionSpec, Kind
from deploy.naming import Deployment

# Sub variable -> the stack output it stands for (imported by the app stack).
VARIABLES: Final[Mapping[str, str]] = {
    "Bucket": "AnalyticsBucketName",
    "PlansTable": "PlansTableName",
    "CurationTable": "CurationTableName",
    "Stream": "FirehoseStreamName",
    "AlertsTopicArn": "AlertsTopicArn",
    "GlueDatabase": "GlueDatabaseName",
    "GlueTable": "GlueTableName",
    "WorkGroup": "AthenaWorkGroupName",
}


def _arn(service: str, resource: str) -> str:
    """An ARN of the stage's account and region."""
    return f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{resource}"


BUCKET: Final = "arn:${AWS::Partition}:s3:::${Bucket}"
PLANS_TABLE: Final = _arn("dynamodb", "table/${PlansTable}")
CURATION_TABLE: Final = _arn("dynamodb", "table/${CurationTable}")
STREAM: Final = _arn("firehose", "deliverystream/${Stream}")
ALERTS_TOPIC: Final = "${AlertsTopicArn}"
WORKGROUP: Final = _arn("athena", "workgroup/${WorkGroup}")
CATALOG: Final = (
    _arn("glue", "catalog"),
    _arn("glue", "database/${GlueDatabase}"),
    _arn("glue", "table/${GlueDatabase}/${GlueTable}"),
)
LOG_GROUP: Final = _arn("logs", "log-group:/aws/lambda/${FunctionName}:*")
_GEO_PROFILE: Final = re.compile(r"^(?:us|us-gov|eu|apac|jp|au|ca|global)\.")


def objects(*prefixes: str) -> tuple[str, ...]:
    """The bucket's objects under each prefix."""
    return tuple(f"{BUCKET}/{prefix}*" for prefix in prefixes)


@dataclass(frozen=True)
class Grant:
    """One IAM statement: actions on resources, and why the function needs them."""

    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    why: str
    list_prefixes: tuple[str, ...] = ()  # s3:ListBucket: only keys under these prefixes
    allowance: bool = False  # granted though no boto3 call of the code makes it

    def statement(self) -> dict[str, Any]:
        """The statement, resources still as Sub texts."""
        statement: dict[str, Any] = {
            "Sid": self.sid,
            "Effect": "Allow",
            "Action": list(self.actions),
            "Resource": list(self.resources),
        }
        if self.list_prefixes:
            patterns = [f"{prefix}*" for prefix in self.list_prefixes]
            statement["Condition"] = {"StringLike": {"s3:prefix": patterns}}
        return statement


LOGS = Grant(
    "WriteOwnLogs",
    ("logs:CreateLogStream", "logs:PutLogEvents"),
    (LOG_GROUP,),
    "The Lambda runtime writes the function's logs to its own log group, which the app "
    "stack creates (so no logs:CreateLogGroup).",
    allowance=True,
)

# -- the API (chat, usage, plans) --------------------------------------------------------

API_GRANTS: Final = (
    Grant(
        "StreamUsageEvents",
        ("firehose:PutRecordBatch",),
        (STREAM,),
        "chalicelib/firehose.py sends each usage event to the stage's stream.",
    ),
    Grant(
        "WriteFallbackUsageEvents",
        ("s3:PutObject",),
        objects("fallback/"),
        "chalicelib/recorder.py writes an event Firehose refused under fallback/ (only there: "
        "the API cannot write or delete curated usage/).",
    ),
    Grant(
        "BudgetPlansAndCounters",
        ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"),
        (PLANS_TABLE,),
        "chalicelib/budgets/dynamo.py: plans (PUT /admin/tenants/{id}/plan), reservations and "
        "settles, month counters; chalicelib/request_items.py: Idempotency-Key claims (deleted "
        "when a call is refused or fails), refusal counters, usage-query rate windows.",
    ),
    Grant(
        "PublishBudgetAlerts",
        ("sns:Publish",),
        (ALERTS_TOPIC,),
        "chalicelib/budgets/alerts.py publishes the 50/80/100 % alerts.",
    ),
    Grant(
        "QueryUsage",
        (
            "athena:GetWorkGroup",
            "athena:StartQueryExecution",
            "athena:GetQueryExecution",
            "athena:GetQueryResults",
        ),
        (WORKGROUP,),
        "GET /usage and /admin/usage: awswrangler.athena.read_sql_query in the workgroup.",
    ),
    Grant(
        "ReadQueryResults",
        ("s3:GetObject",),
        objects("athena-results/"),
        "awswrangler reads the query's CSV result from the workgroup's output location.",
    ),
    Grant(
        "CancelQueries",
        ("athena:StopQueryExecution",),
        (WORKGROUP,),
        "awswrangler stops a query it stops waiting for (timeout, error).",
        allowance=True,
    ),
    Grant(
        "AthenaReadsCatalog",
        (
            "glue:GetDatabase",
            "glue:GetTable",
            "glue:GetPartition",
            "glue:GetPartitions",
            "glue:BatchGetPartition",
        ),
        CATALOG,
        "Athena reads the table and its partitions with the caller's permissions. Read only: "
        "the API cannot create, change or delete partitions.",
        allowance=True,
    ),
    Grant(
        "AthenaReadsCuratedUsage",
        ("s3:GetObject",),
        objects("usage/"),
        "Athena reads the curated Parquet with the caller's permissions (read only).",
        allowance=True,
    ),
    Grant(
        "AthenaWritesResults",
        ("s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"),
        objects("athena-results/"),
        "Athena writes query results to the workgroup's output location as the caller.",
        allowance=True,
    ),
    Grant(
        "AthenaListsUsageAndResults",
        ("s3:ListBucket",),
        (BUCKET,),
        "Athena lists the partitions' objects and the result location as the caller.",
        list_prefixes=("usage/", "athena-results/"),
        allowance=True,
    ),
    Grant(
        "AthenaLocatesBucket",
        ("s3:GetBucketLocation", "s3:ListBucketMultipartUploads"),
        (BUCKET,),
        "Athena checks the data and result bucket as the caller.",
        allowance=True,
    ),
)

# -- the partition jobs ----------------------------------------------------------------------

PARTITION_JOB_GRANTS: Final = (
    Grant(
        "ListUsageObjects",
        ("s3:ListBucket",),
        (BUCKET,),
        "chalicelib/analytics/sources.py lists raw/ and fallback/ hours; the job lists its "
        "generation folders under usage/ and manifests/usage/ to retire them. Not limited by "
        "prefix: S3 answers a read of a missing object with 404 only to callers that may list "
        "the bucket, else 403.",
    ),
    Grant(
        "ReadUsageSourcesAndGenerations",
        ("s3:GetObject",),
        objects("raw/", "fallback/", "usage/", "manifests/usage/"),
        "The job reads raw and fallback events, the committed generation's files (to merge "
        "new events into them, or copy them unchanged) and its manifest of input objects.",
    ),
    Grant(
        "WriteGenerations",
        ("s3:PutObject", "s3:DeleteObject"),
        objects("usage/", "manifests/usage/"),
        "chalicelib/analytics/curated.py writes a new generation of the day and its manifest; "
        "retired generations are deleted after their grace period.",
    ),
    Grant(
        "QuarantineBadLines",
        ("s3:PutObject",),
        objects("quarantine/"),
        "chalicelib/analytics/quarantine.py keeps each line that is not a valid event, with "
        "its reason, source object and line number.",
    ),
    Grant(
        "RefileStrayEvents",
        ("s3:PutObject",),
        objects("fallback/"),
        "An event found outside its own day's window is re-filed under fallback/ for its "
        "day's next run.",
    ),
    Grant(
        "AbortCuratedUploads",
        ("s3:AbortMultipartUpload",),
        objects("usage/"),
        "A large Parquet file is a multipart upload, aborted if the write fails.",
        allowance=True,
    ),
    Grant(
        "SwitchPartitions",
        ("glue:GetTable", "glue:GetPartition", "glue:CreatePartition", "glue:UpdatePartition"),
        CATALOG,
        "chalicelib/analytics/catalog.py points the day's partition at its committed "
        "generation (creating it on the day's first run).",
    ),
    Grant(
        "CurationLeaseAndState",
        ("dynamodb:GetItem", "dynamodb:UpdateItem"),
        (CURATION_TABLE,),
        "chalicelib/analytics/state.py: the day's lease and its committed generation "
        "(conditional writes: overlapping runs commit once).",
    ),
)

# -- the budget repair job ----------------------------------------------------------------------

REPAIR_JOB_GRANTS: Final = (
    Grant(
        "BudgetPlansAndCounters",
        ("dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:DeleteItem"),
        (PLANS_TABLE,),
        "chalicelib/budgets/repair.py finds and finishes expired reservations; the refusal "
        "flush reads and retires each finished minute's refusal counters.",
    ),
    Grant(
        "StreamRefusalAggregates",
        ("firehose:PutRecordBatch",),
        (STREAM,),
        "chalicelib/refusals.py: one aggregate `rejected` event per tenant, reason and minute "
        "beyond the first refusals recorded one by one.",
    ),
    Grant(
        "WriteFallbackRefusalAggregates",
        ("s3:PutObject",),
        objects("fallback/"),
        "An aggregate Firehose refuses goes to fallback/, as the chat path's events do.",
    ),
    Grant(
        "PublishBudgetAlerts",
        ("sns:Publish",),
        (ALERTS_TOPIC,),
        "The repair sends alerts a failed settle missed.",
    ),
    Grant(
        "ListUsageEvents",
        ("s3:ListBucket",),
        (BUCKET,),
        "The repair lists raw/ hours for an event. Not limited by prefix: S3 answers a read "
        "of a missing fallback object with 404 only to callers that may list the bucket, "
        "and the repair takes a 403 as 'unreadable' and retries forever.",
    ),
    Grant(
        "ReadUsageEvents",
        ("s3:GetObject",),
        objects("raw/", "fallback/", "usage/", "manifests/usage/"),
        "chalicelib/analytics/lookup.py reads an expired reservation's event: from fallback/ "
        "by key, from the curated generation's row groups (ranged reads), or from raw objects "
        "not curated yet (the generation's manifest says which).",
    ),
    Grant(
        "ReadCurationState",
        ("dynamodb:GetItem",),
        (CURATION_TABLE,),
        "The lookup reads which generation each day has committed.",
    ),
)

GRANTS: Final[Mapping[Kind, tuple[Grant, ...]]] = {
    "api": API_GRANTS,
    "partition-job": PARTITION_JOB_GRANTS,
    "repair-job": REPAIR_JOB_GRANTS,
}


def model_resources(model_id: str, aliases: Mapping[str, str]) -> tuple[str, ...]:
    """What bedrock:InvokeModel must allow to call one model id (and nothing more)."""
    from chalicelib.pricing import base_model_id, is_application_profile

    if is_application_profile(model_id):
        if model_id not in aliases:
            raise DeployError(
                f"model {model_id} is an application inference profile: map it to its "
                "model in MODEL_ALIASES, so no function needs bedrock:GetInferenceProfile."
            )
        base = base_model_id(aliases[model_id])
        return (model_id, f"arn:${{AWS::Partition}}:bedrock:*::foundation-model/{base}")
    if model_id.startswith("arn:"):
        if ":inference-profile/" in model_id:
            base = base_model_id(model_id)
            return (model_id, f"arn:${{AWS::Partition}}:bedrock:*::foundation-model/{base}")
        return (model_id,)
    if _GEO_PROFILE.match(model_id):
        # A cross-region profile routes to the model in any of its regions.
        return (
            _arn("bedrock", f"inference-profile/{model_id}"),
            f"arn:${{AWS::Partition}}:bedrock:*::foundation-model/{base_model_id(model_id)}",
        )
    return (f"arn:${{AWS::Partition}}:bedrock:${{AWS::Region}}::foundation-model/{model_id}",)


def stage_models(environment: Mapping[str, str]) -> tuple[str, ...]:
    """The models a stage's API may call, read from its environment as the app reads it
    (chalicelib.settings.Settings.stage_models: MODEL_ID, and ALLOWED_MODELS with budgets
    on). DeployError if one has no price: the app would answer every chat with 500."""
    from chalicelib.pricing import UnknownModelError, load_price_table
    from chalicelib.settings import Settings

    settings = Settings.from_env({**environment, "AWS_REGION": "us-east-1"})
    aliases = dict(settings.model_aliases)
    prices = load_price_table().with_aliases(aliases)
    for model_id in settings.stage_models:
        model_resources(model_id, aliases)  # an application profile must be in MODEL_ALIASES
        try:
            prices.price_of(model_id)
        except UnknownModelError:
            raise DeployError(
                f"model {model_id} has no price in price table {prices.version}: add it to "
                "chalicelib/data/prices/ or take it out of MODEL_ID / ALLOWED_MODELS."
            ) from None
    return settings.stage_models


def invoke_models(model_ids: Iterable[str], aliases: Mapping[str, str]) -> Grant:
    """bedrock:InvokeModel on exactly the resources the stage's models are called through."""
    resources: list[str] = []
    for model_id in model_ids:
        resources += [r for r in model_resources(model_id, aliases) if r not in resources]
    return Grant(
        "InvokeStageModels",
        ("bedrock:InvokeModel",),
        tuple(resources),
        "chalicelib/bedrock.py: Converse with the stage's models only: MODEL_ID, and with "
        "budgets on the ALLOWED_MODELS a tenant's plan may allow.",
    )


def grants(
    spec: FunctionSpec, model_ids: Iterable[str], aliases: Mapping[str, str]
) -> tuple[Grant, ...]:
    """Everything `spec`'s function may do; only the API may call models."""
    extra: tuple[Grant, ...] = ()
    if spec.kind == "api":
        extra = (invoke_models(model_ids, aliases),)
    return (LOGS, *extra, *GRANTS[spec.kind])


def policy(grant_list: Iterable[Grant], function_name: str) -> dict[str, Any]:
    """The policy document with Sub texts (before rendering)."""
    statements = []
    for grant in grant_list:
        statement = grant.statement()
        statement["Resource"] = [
            text.replace("${FunctionName}", function_name) for text in statement["Resource"]
        ]
        statements.append(statement)
    return {"Version": "2012-10-17", "Statement": statements}


def cloudformation(document: dict[str, Any], deployment: Deployment) -> dict[str, Any]:
    """The policy with each resource an `Fn::Sub` importing the stack outputs it names."""
    rendered = []
    for statement in document["Statement"]:
        resources = []
        for text in statement["Resource"]:
            used = [v for v in cfn.SUB_VARIABLE.findall(text) if not v.startswith("AWS::")]
            unknown = [v for v in used if v not in VARIABLES]
            if unknown:
                raise DeployError(f"{statement['Sid']}: unknown variable(s) {unknown}")
            if [text] == [f"${{{v}}}" for v in used]:  # the whole ARN is one output
                resources.append(cfn.import_value(deployment.export(VARIABLES[used[0]])))
                continue
            imports = {v: cfn.import_value(deployment.export(VARIABLES[v])) for v in used}
            resources.append(cfn.sub(text, imports))
        rendered.append({**statement, "Resource": resources})
    return {"Version": document["Version"], "Statement": rendered}


def concrete(document: dict[str, Any], resolver: cfn.Resolver) -> dict[str, Any]:
    """The policy with every resource resolved to its ARN (for `chalice deploy`)."""
    return {
        "Version": document["Version"],
        "Statement": [
            {**s, "Resource": [resolver(cfn.sub(text)) for text in s["Resource"]]}
            for s in document["Statement"]
        ],
    }
