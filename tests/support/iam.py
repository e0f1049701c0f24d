"""AWS calls the code makes, as IAM requests, and a small evaluator of identity policies.

`CallRecorder` wraps every botocore client call of a test (whatever client, session or
library made it: boto3 in chalicelib, awswrangler). `requests_for` turns one call into the
IAM requests AWS would authorize (action, resource ARNs, condition context), including S3's
rule that a read of a missing object is answered 404 only to callers that may list the
bucket. `allowed` evaluates the Allow statements this project writes (no Deny, no
NotAction/NotResource), with IAM's `*`/`?` wildcards and StringLike/StringEquals conditions.
A (service, operation) without a mapping here fails the test: a new kind of call must be
mapped, and granted, on purpose.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import botocore.client
from botocore.exceptions import ClientError


@dataclass(frozen=True)
class Call:
    """One API call a client made, and the error code AWS (moto) answered, if any."""

    service: str  # botocore service name: s3, dynamodb, bedrock-runtime, ...
    operation: str
    params: Mapping[str, Any]
    region: str
    error: str | None = None


@dataclass(frozen=True)
class Request:
    """What IAM authorizes: one action on some resources, in a condition context."""

    action: str
    resources: tuple[str, ...]
    context: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = f" {dict(self.context)}" if self.context else ""
        return f"{self.action} on {', '.join(self.resources)}{extra}"


class CallRecorder:
    """Records every botocore call made while `recording()` is active."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.after: list[Callable[[Call, Any], None]] = []
        self._paused = threading.local()

    @contextmanager
    def recording(self) -> Iterator[CallRecorder]:
        original = botocore.client.BaseClient._make_api_call
        recorder = self

        def record(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if getattr(recorder._paused, "on", False):
                return original(client, operation, params)
            service = client.meta.service_model.service_name
            region = client.meta.region_name
            try:
                result = original(client, operation, params)
            except ClientError as error:
                code = str(error.response.get("Error", {}).get("Code", ""))
                recorder.calls.append(Call(service, operation, dict(params), region, code))
                raise
            call = Call(service, operation, dict(params), region)
            recorder.calls.append(call)
            with recorder.paused():
                for hook in recorder.after:
                    hook(call, result)
            return result

        botocore.client.BaseClient._make_api_call = record  # type: ignore[method-assign]
        try:
            yield self
        finally:
            botocore.client.BaseClient._make_api_call = original  # type: ignore[method-assign]

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Calls made inside are not recorded (test set-up, shims)."""
        before = getattr(self._paused, "on", False)
        self._paused.on = True
        try:
            yield
        finally:
            self._paused.on = before

    def take(self) -> list[Call]:
        """The calls so far, and start over."""
        calls, self.calls = self.calls, []
        return calls


@dataclass(frozen=True)
class Account:
    """Where ARNs point: the test account, its region, and the stage's Athena workgroup."""

    account_id: str
    workgroup: str
    partition: str = "aws"


_GEO_PROFILE = re.compile(r"^(?:us|us-gov|eu|apac|jp|au|ca|global)\.")
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_S3_OBJECT_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "DeleteObject": "s3:DeleteObject",
}
_S3_BUCKET_ACTIONS = {
    "ListObjects": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "GetBucketLocation": "s3:GetBucketLocation",
    "ListObjectVersions": "s3:ListBucketVersions",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
}
_DYNAMODB = frozenset(
    {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem"}
)
_GLUE_TABLE = frozenset(
    {
        "GetTable",
        "GetPartition",
        "GetPartitions",
        "BatchGetPartition",
        "CreatePartition",
        "BatchCreatePartition",
        "UpdatePartition",
        "BatchUpdatePartition",
        "DeletePartition",
        "BatchDeletePartition",
        "UpdateTable",
        "DeleteTable",
    }
)
_ATHENA = frozenset(
    {
        "GetWorkGroup",
        "StartQueryExecution",
        "GetQueryExecution",
        "GetQueryResults",
        "StopQueryExecution",
        "BatchGetQueryExecution",
        "ListQueryExecutions",
    }
)
_NO_PERMISSION = frozenset({("sts", "GetCallerIdentity")})


def requests_for(call: Call, account: Account) -> list[Request]:
    """The IAM requests one call needs; AssertionError for a call this module cannot map."""
    if (call.service, call.operation) in _NO_PERMISSION:
        return []
    mapper = _MAPPERS.get(call.service)
    found = mapper(call, account) if mapper else None
    if found is None:
        raise AssertionError(
            f"tests/support/iam.py has no IAM mapping for {call.service}.{call.operation}: "
            "add it (and grant it in deploy/iam.py if the code really needs it)"
        )
    return found


def _s3(call: Call, account: Account) -> list[Request] | None:
    bucket = f"arn:{account.partition}:s3:::{call.params.get('Bucket')}"
    if call.operation in _S3_OBJECT_ACTIONS:
        key = f"{bucket}/{call.params['Key']}"
        found = [Request(_S3_OBJECT_ACTIONS[call.operation], (key,))]
        if call.operation in ("GetObject", "HeadObject") and call.error in _MISSING:
            # S3 says 404 (not 403) for a missing key only to callers that may list.
            found.append(Request("s3:ListBucket", (bucket,)))
        return found
    if call.operation == "DeleteObjects":
        keys = tuple(f"{bucket}/{o['Key']}" for o in call.params["Delete"]["Objects"])
        return [Request("s3:DeleteObject", keys)]
    if call.operation in _S3_BUCKET_ACTIONS:
        prefix = call.params.get("Prefix")
        context = {"s3:prefix": prefix} if prefix is not None else {}
        return [Request(_S3_BUCKET_ACTIONS[call.operation], (bucket,), context)]
    return None


def _arn(call: Call, account: Account, service: str, resource: str) -> str:
    return f"arn:{account.partition}:{service}:{call.region}:{account.account_id}:{resource}"


def _dynamodb(call: Call, account: Account) -> list[Request] | None:
    if call.operation not in _DYNAMODB:
        return None
    table = _arn(call, account, "dynamodb", f"table/{call.params['TableName']}")
    if call.params.get("IndexName"):
        table += f"/index/{call.params['IndexName']}"
    return [Request(f"dynamodb:{call.operation}", (table,))]


def _firehose(call: Call, account: Account) -> list[Request] | None:
    if call.operation not in ("PutRecord", "PutRecordBatch"):
        return None
    stream = _arn(call, account, "firehose", f"deliverystream/{call.params['DeliveryStreamName']}")
    return [Request(f"firehose:{call.operation}", (stream,))]


def _sns(call: Call, account: Account) -> list[Request] | None:
    if call.operation != "Publish":
        return None
    return [Request("sns:Publish", (str(call.params.get("TopicArn") or call.params["TargetArn"]),))]


def _bedrock_runtime(call: Call, account: Account) -> list[Request] | None:
    action = {
        "Converse": "bedrock:InvokeModel",
        "InvokeModel": "bedrock:InvokeModel",
        "ConverseStream": "bedrock:InvokeModelWithResponseStream",
        "InvokeModelWithResponseStream": "bedrock:InvokeModelWithResponseStream",
    }.get(call.operation)
    if action is None:
        return None
    model_id = str(call.params["modelId"])
    requests = [Request(action, (_model_arn(model_id, account, call.region),))]
    if _GEO_PROFILE.match(model_id):
        # A call through a cross-region inference profile is authorized on the profile and
        # on the foundation model in the region it is routed to (here: the caller's own).
        base = _GEO_PROFILE.sub("", model_id)
        model = f"arn:{account.partition}:bedrock:{call.region}::foundation-model/{base}"
        requests.append(Request(action, (model,)))
    return requests


def _bedrock(call: Call, account: Account) -> list[Request] | None:
    if call.operation != "GetInferenceProfile":
        return None
    profile = str(call.params["inferenceProfileIdentifier"])
    return [Request("bedrock:GetInferenceProfile", (profile,))]


def _glue(call: Call, account: Account) -> list[Request] | None:
    database = str(call.params.get("DatabaseName") or call.params.get("Name"))
    resources = [_arn(call, account, "glue", "catalog")]
    resources.append(_arn(call, account, "glue", f"database/{database}"))
    if call.operation == "GetDatabase":
        return [Request("glue:GetDatabase", tuple(resources))]
    if call.operation not in _GLUE_TABLE:
        return None
    table = call.params.get("TableName") or call.params.get("Name")
    resources.append(_arn(call, account, "glue", f"table/{database}/{table}"))
    return [Request(f"glue:{call.operation}", tuple(resources))]


def _athena(call: Call, account: Account) -> list[Request] | None:
    if call.operation not in _ATHENA:
        return None
    workgroup = call.params.get("WorkGroup") or account.workgroup
    return [
        Request(
            f"athena:{call.operation}", (_arn(call, account, "athena", f"workgroup/{workgroup}"),)
        )
    ]


_MAPPERS: dict[str, Callable[[Call, Account], list[Request] | None]] = {
    "s3": _s3,
    "dynamodb": _dynamodb,
    "firehose": _firehose,
    "sns": _sns,
    "bedrock-runtime": _bedrock_runtime,
    "bedrock": _bedrock,
    "glue": _glue,
    "athena": _athena,
}


def _model_arn(model_id: str, account: Account, region: str) -> str:
    if model_id.startswith("arn:"):
        return model_id
    if _GEO_PROFILE.match(model_id):
        profile = f"inference-profile/{model_id}"
        return f"arn:{account.partition}:bedrock:{region}:{account.account_id}:{profile}"
    return f"arn:{account.partition}:bedrock:{region}::foundation-model/{model_id}"


def _wildcard(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.IGNORECASE if ignore_case else 0)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _conditions_hold(condition: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    for operator, tests in condition.items():
        if operator not in ("StringLike", "StringEquals"):
            raise AssertionError(f"the evaluator does not know condition operator {operator}")
        for key, expected in tests.items():
            value = context.get(key)
            if value is None:
                return False
            patterns = _as_list(expected)
            if operator == "StringEquals" and value not in patterns:
                return False
            if operator == "StringLike" and not any(
                _wildcard(str(pattern)).fullmatch(value) for pattern in patterns
            ):
                return False
    return True


def allowed(policy: Mapping[str, Any], request: Request) -> bool:
    """Whether some Allow statement covers the action on every resource, in the context."""
    for resource in request.resources:
        if not any(
            statement.get("Effect") == "Allow"
            and any(
                _wildcard(str(a), ignore_case=True).fullmatch(request.action)
                for a in _as_list(statement["Action"])
            )
            and any(_wildcard(str(r)).fullmatch(resource) for r in _as_list(statement["Resource"]))
            and _conditions_hold(statement.get("Condition", {}), request.context)
            for statement in policy["Statement"]
        ):
            return False
    return True


def denied(policy: Mapping[str, Any], requests: Sequence[Request]) -> list[str]:
    """The requests the policy does not allow, readable."""
    return [str(request) for request in requests if not allowed(policy, request)]


def uses(statement: Mapping[str, Any], request: Request) -> bool:
    """Whether the request needs this statement: its action, one of its resources, its context."""
    return (
        any(
            _wildcard(str(a), ignore_case=True).fullmatch(request.action)
            for a in _as_list(statement["Action"])
        )
        and any(
            _wildcard(str(r)).fullmatch(resource)
            for r in _as_list(statement["Resource"])
            for resource in request.resources
        )
        and _conditions_hold(statement.get("Condition", {}), request.context)
    )
