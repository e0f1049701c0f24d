"""CloudWatch: dashboards and metric alarms (single metric or metric math)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from botocore.exceptions import ClientError

from chalicelib.aws_errors import error_code
from local.provision.clients import ServiceClients
from local.provision.intrinsics import StackContext
from local.provision.model import JsonDict, ProvisionedResource, ProvisioningError
from local.provision.resources.base import (
    MissingResourceError,
    ResourceKind,
    pick,
    require,
)

_DASHBOARD_PROPERTIES: Final = frozenset({"DashboardName", "DashboardBody"})

# Alarm properties passed to PutMetricAlarm as they are (strings and lists of strings).
_ALARM_PLAIN: Final = (
    "AlarmDescription",
    "Namespace",
    "MetricName",
    "Statistic",
    "ExtendedStatistic",
    "ComparisonOperator",
    "TreatMissingData",
    "EvaluateLowSampleCountPercentile",
    "ThresholdMetricId",
    "Unit",
    "AlarmActions",
    "OKActions",
    "InsufficientDataActions",
)
_ALARM_INTS: Final = ("Period", "EvaluationPeriods", "DatapointsToAlarm")
_ALARM_PROPERTIES: Final = frozenset(
    {"AlarmName", "ActionsEnabled", "Dimensions", "Threshold", "Metrics"}
    | set(_ALARM_PLAIN)
    | set(_ALARM_INTS)
)
_METRIC_QUERY_KEYS: Final = frozenset(
    {"Id", "Expression", "Label", "MetricStat", "Period", "ReturnData", "AccountId"}
)


def _flag(value: Any) -> bool:
    """A CloudFormation Boolean: true/false, or the strings "true"/"false"."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text not in ("true", "false"):
        raise ProvisioningError(f"not a Boolean: {value!r}")
    return text == "true"


# --------------------------------------------------------------------------- dashboards


def _check_dashboard_body(logical_id: str, body: Any) -> str:
    """The body as CloudWatch takes it: a JSON string holding an object with widgets.

    CloudWatch validates a dashboard body on PutDashboard and CloudFormation fails the stack
    on a bad one; moto only checks that it is JSON, so the shape is checked here.
    """
    if not isinstance(body, str):
        raise ProvisioningError(f"{logical_id}: DashboardBody must be a JSON string")
    try:
        document = json.loads(body)
    except ValueError as error:
        raise ProvisioningError(f"{logical_id}: DashboardBody is not JSON ({error})") from None
    widgets = document.get("widgets") if isinstance(document, dict) else None
    if not isinstance(widgets, list) or not widgets:
        raise ProvisioningError(f"{logical_id}: DashboardBody needs a non-empty 'widgets' list")
    for index, widget in enumerate(widgets):
        if not isinstance(widget, dict) or not isinstance(widget.get("type"), str):
            raise ProvisioningError(f"{logical_id}: widget {index} has no 'type'")
        if not isinstance(widget.get("properties"), dict):
            raise ProvisioningError(f"{logical_id}: widget {index} has no 'properties' object")
    return body


def _dashboard(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    name = str(props.get("DashboardName") or ctx.generated_name(logical_id, 255))
    body = _check_dashboard_body(logical_id, props["DashboardBody"])
    answer = ctx.clients("cloudwatch").put_dashboard(DashboardName=name, DashboardBody=body)
    problems = answer.get("DashboardValidationMessages") or []
    if problems:
        raise ProvisioningError(f"{logical_id}: CloudWatch rejected the dashboard: {problems}")
    return ProvisionedResource(logical_id, "AWS::CloudWatch::Dashboard", name)


def _dashboard_probe(clients: ServiceClients, resource: ProvisionedResource) -> Any:
    try:
        return clients("cloudwatch").get_dashboard(DashboardName=resource.physical_id)
    except ClientError as error:
        if error_code(error) == "ResourceNotFound":  # CloudWatch's own spelling of not found
            raise MissingResourceError(resource.logical_id) from None
        raise


# --------------------------------------------------------------------------- alarms


def _metric_query(logical_id: str, query: Mapping[str, Any]) -> JsonDict:
    """One entry of an alarm's Metrics (metric math) as PutMetricAlarm takes it."""
    extra = set(query) - _METRIC_QUERY_KEYS
    if extra:
        raise ProvisioningError(f"{logical_id}: Metrics entry has unknown key(s) {sorted(extra)}")
    if ("Expression" in query) == ("MetricStat" in query):
        raise ProvisioningError(
            f"{logical_id}: Metrics entry {query.get('Id')!r} needs exactly one of "
            "Expression or MetricStat"
        )
    entry: JsonDict = pick(query, "Id", "Expression", "Label", "AccountId")
    if "Period" in query:
        entry["Period"] = int(query["Period"])
    if "ReturnData" in query:
        entry["ReturnData"] = _flag(query["ReturnData"])
    if "MetricStat" in query:
        stat = query["MetricStat"]
        entry["MetricStat"] = {
            "Metric": pick(stat["Metric"], "Namespace", "MetricName", "Dimensions"),
            "Period": int(stat["Period"]),
            "Stat": str(stat["Stat"]),
            **pick(stat, "Unit"),
        }
    return entry


def _alarm_request(logical_id: str, name: str, props: JsonDict) -> JsonDict:
    """PutMetricAlarm's arguments, refusing what CloudFormation would refuse."""
    single = "MetricName" in props
    if single == ("Metrics" in props):
        raise ProvisioningError(f"{logical_id}: give either MetricName or Metrics, not both")
    if single and ("Statistic" in props) == ("ExtendedStatistic" in props):
        raise ProvisioningError(f"{logical_id}: give one of Statistic or ExtendedStatistic")
    for required in ("ComparisonOperator", "EvaluationPeriods"):
        if required not in props:
            raise ProvisioningError(f"{logical_id}: {required} is required")
    if "Threshold" not in props and "ThresholdMetricId" not in props:
        raise ProvisioningError(f"{logical_id}: Threshold (or ThresholdMetricId) is required")
    request: JsonDict = {"AlarmName": name, **pick(props, *_ALARM_PLAIN)}
    request.update({key: int(props[key]) for key in _ALARM_INTS if key in props})
    if "Threshold" in props:
        request["Threshold"] = float(props["Threshold"])
    if "ActionsEnabled" in props:
        request["ActionsEnabled"] = _flag(props["ActionsEnabled"])
    if "Dimensions" in props:
        request["Dimensions"] = [
            {"Name": str(d["Name"]), "Value": str(d["Value"])} for d in props["Dimensions"]
        ]
    if "Metrics" in props:
        request["Metrics"] = [_metric_query(logical_id, query) for query in props["Metrics"]]
    return request


def _alarm(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    cloudwatch = ctx.clients("cloudwatch")
    name = str(props.get("AlarmName") or ctx.generated_name(logical_id, 255))
    # PutMetricAlarm creates or replaces the alarm of that name: reruns converge.
    cloudwatch.put_metric_alarm(**_alarm_request(logical_id, name, props))
    (alarm,) = cloudwatch.describe_alarms(AlarmNames=[name], AlarmTypes=["MetricAlarm"])[
        "MetricAlarms"
    ]
    return ProvisionedResource(
        logical_id, "AWS::CloudWatch::Alarm", name, {"Arn": str(alarm["AlarmArn"])}
    )


KINDS: Final[Mapping[str, ResourceKind]] = {
    "AWS::CloudWatch::Dashboard": ResourceKind(_dashboard, _dashboard_probe, _DASHBOARD_PROPERTIES),
    "AWS::CloudWatch::Alarm": ResourceKind(
        _alarm,
        lambda c, r: require(
            c("cloudwatch").describe_alarms(AlarmNames=[r.physical_id])["MetricAlarms"],
            "AlarmName",
            r,
        ),
        _ALARM_PROPERTIES,
    ),
}
