"""CloudWatch alarms of a deployment, all sent to the stage's alerts topic.

- usage delivery: Firehose failing to write to S3, or falling behind;
- every scheduled job: any error (a failed or timed-out run);
- the API: more than 5 % of requests answered 5xx (at least 10 requests in 5 minutes);
- budget repair finding stale reservations (requests that died between reserve and settle):
  read from the job's own structured log line by metric filters, so the code needs no
  CloudWatch call and no extra permission.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from deploy import cfn
from deploy.naming import Deployment

# The repair job's summary log line (chalicelib/budgets/repair.py, JSON via chalicelib/logs.py);
# tests/functional/test_deploy_alarms.py checks the job still writes it with these fields.
REPAIR_LOG_MESSAGE: Final = "budget repair finished"
STALE_RESERVATION_FIELDS: Final[Mapping[str, str]] = {
    "StaleReservationsSettled": "settled_from_events",
    "StaleReservationsReleased": "released",
}
API_5XX_PERCENT: Final = 5
API_MIN_REQUESTS: Final = 10
FIREHOSE_MAX_AGE_S: Final = 900
PERIOD_S: Final = 300


def _alarm(deployment: Deployment, description: str, **properties: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": f"[{deployment.stage}] {description}",
            "AlarmActions": [cfn.import_value(deployment.export("AlertsTopicArn"))],
            "TreatMissingData": "notBreaching",
            **properties,
        },
    }


def _metric(namespace: str, name: str, dimensions: Mapping[str, Any], stat: str) -> dict[str, Any]:
    return {
        "Metric": {
            "Namespace": namespace,
            "MetricName": name,
            "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
        },
        "Period": PERIOD_S,
        "Stat": stat,
    }


def resources(
    deployment: Deployment,
    job_functions: Mapping[str, str],
    repair_log_group: str,
) -> dict[str, Any]:
    """The alarm (and metric filter) resources.

    `job_functions`: logical id of each scheduled function; `repair_log_group`: logical id of
    the budget repair job's log group.
    """
    stream = {"DeliveryStreamName": cfn.import_value(deployment.export("FirehoseStreamName"))}
    result: dict[str, Any] = {
        "UsageDeliveryFailingAlarm": _alarm(
            deployment,
            "Firehose is failing to deliver usage events to S3 (they are retried for 24 h).",
            Namespace="AWS/Firehose",
            MetricName="DeliveryToS3.Success",
            Dimensions=[{"Name": k, "Value": v} for k, v in stream.items()],
            Statistic="Average",
            Period=PERIOD_S,
            EvaluationPeriods=3,
            DatapointsToAlarm=2,
            Threshold=1,
            ComparisonOperator="LessThanThreshold",
        ),
        "UsageDeliveryLateAlarm": _alarm(
            deployment,
            f"Usage events wait more than {FIREHOSE_MAX_AGE_S} s in Firehose before reaching S3.",
            Namespace="AWS/Firehose",
            MetricName="DeliveryToS3.DataFreshness",
            Dimensions=[{"Name": k, "Value": v} for k, v in stream.items()],
            Statistic="Maximum",
            Period=PERIOD_S,
            EvaluationPeriods=3,
            DatapointsToAlarm=3,
            Threshold=FIREHOSE_MAX_AGE_S,
            ComparisonOperator="GreaterThanThreshold",
        ),
        "ApiServerErrorRateAlarm": _alarm(
            deployment,
            f"More than {API_5XX_PERCENT} % of API requests answered 5xx.",
            Metrics=[
                {
                    "Id": "errors",
                    "MetricStat": _metric(
                        "AWS/ApiGateway",
                        "5XXError",
                        {"ApiName": deployment.api_name, "Stage": "api"},
                        "Sum",
                    ),
                    "ReturnData": False,
                },
                {
                    "Id": "requests",
                    "MetricStat": _metric(
                        "AWS/ApiGateway",
                        "Count",
                        {"ApiName": deployment.api_name, "Stage": "api"},
                        "Sum",
                    ),
                    "ReturnData": False,
                },
                {
                    "Id": "rate",
                    "Expression": (
                        f"IF(requests >= {API_MIN_REQUESTS}, 100 * errors / requests, 0)"
                    ),
                    "Label": "5xx percent",
                    "ReturnData": True,
                },
            ],
            EvaluationPeriods=3,
            DatapointsToAlarm=2,
            Threshold=API_5XX_PERCENT,
            ComparisonOperator="GreaterThanThreshold",
        ),
    }
    for logical_id in sorted(job_functions.values()):
        result[f"{logical_id}ErrorsAlarm"] = _alarm(
            deployment,
            f"Scheduled function {logical_id} failed (error or timeout).",
            Namespace="AWS/Lambda",
            MetricName="Errors",
            Dimensions=[{"Name": "FunctionName", "Value": cfn.ref(logical_id)}],
            Statistic="Sum",
            Period=PERIOD_S,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
        )

    metrics = []
    for metric, field in STALE_RESERVATION_FIELDS.items():
        result[f"{metric}MetricFilter"] = {
            "Type": "AWS::Logs::MetricFilter",
            "Properties": {
                "LogGroupName": cfn.ref(repair_log_group),
                "FilterPattern": f'{{ $.message = "{REPAIR_LOG_MESSAGE}" }}',
                "MetricTransformations": [
                    {
                        "MetricNamespace": deployment.metrics_namespace,
                        "MetricName": metric,
                        "MetricValue": f"$.{field}",
                        "Unit": "Count",
                    }
                ],
            },
        }
        metrics.append(
            {
                "Id": field,
                "MetricStat": _metric(deployment.metrics_namespace, metric, {}, "Sum"),
                "ReturnData": False,
            }
        )
    result["StaleReservationsAlarm"] = _alarm(
        deployment,
        "Budget repair found reservations never settled: requests died mid-way (timeouts, "
        "crashes, failed settles).",
        Metrics=[
            *metrics,
            {
                "Id": "stale",
                "Expression": " + ".join(f"FILL({m['Id']}, 0)" for m in metrics),
                "Label": "stale reservations repaired",
                "ReturnData": True,
            },
        ],
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    return result
