"""Live call metrics: one CloudWatch Embedded Metric Format line per model call, on stdout."""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import Any, TextIO

from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

from chalicelib.usage import UsageEvent

logger = logging.getLogger(__name__)

# CloudWatch namespace and dimensions of every metric; analytics_infra/template.yaml's
# dashboard searches exactly these (tests/unit/test_call_metrics.py keeps them in step).
NAMESPACE = "BedrockSaaSMetering"
DIMENSIONS: tuple[str, ...] = ("stage", "tenant_id", "model_id")
# A field on every line, so Logs Insights can pick the calls out of the function's other logs.
KIND = "model_call"

# Metric name -> CloudWatch unit. Cost is a double here (CloudWatch has nothing else); the
# exact decimal stays in the line's `cost_usd` field and, for billing, in the usage event.
METRIC_UNITS: Mapping[str, str] = {
    "Requests": "Count",
    "Errors": "Count",
    "Rejected": "Count",
    "InputTokens": "Count",
    "OutputTokens": "Count",
    "CostUSD": "None",
    "Latency": "Milliseconds",
}
_ERROR_STATUSES = frozenset({"error", "aborted"})
# The `model_id` dimension of a call refused for naming a model the stage does not offer
# (unknown, unpriced, or priced under an id it does not call). CloudWatch bills every distinct
# dimension combination as a custom metric, so a dimension's values must come from a bounded
# set, the stage's models, not from whatever id a caller typed. That id stays on the line as
# `requested_model_id`.
OTHER_MODEL = "other"


@functools.lru_cache(maxsize=8)
def _directive(namespace: str, with_latency: bool) -> tuple[dict[str, Any], ...]:
    """The `_aws.CloudWatchMetrics` directive of every line of one shape, built and validated
    by Powertools once per process (a line's shape is its namespace and whether it has a
    latency; names, units and dimension names are constants). Building it per call cost
    about 0.2 ms of the request path's CPU, for the same directive every time."""
    # service="" rather than None: a POWERTOOLS_SERVICE_NAME in the environment would add a
    # `service` dimension and so change every metric's identity; the dimensions are DIMENSIONS.
    # Fresh sets: Powertools' `Metrics` class shares one metric set per process.
    provider = AmazonCloudWatchEMFProvider(
        namespace=namespace, service="", metric_set={}, dimension_set={}, metadata_set={}
    )
    for name, unit in METRIC_UNITS.items():
        if name != "Latency" or with_latency:
            provider.add_metric(name=name, unit=unit, value=0)
    for dimension in DIMENSIONS:
        provider.add_dimension(name=dimension, value="shape")
    document = provider.serialize_metric_set()
    return tuple(dict(directive) for directive in document["_aws"]["CloudWatchMetrics"])


def emf_document(
    event: UsageEvent, *, namespace: str = NAMESPACE, models: Collection[str] | None = None
) -> dict[str, Any]:
    """One call as an Embedded Metric Format document (its directive validated by Powertools).

    Every event counts as `request_count` requests; `Errors` counts model failures and
    aborted calls, `Rejected` the calls refused before the model (budget, rate, plan).
    `Latency` is left out for refusals: they never waited for a model, and would pull the
    percentiles down. `models`: the stage's models; a refused call naming another one gets
    the dimension OTHER_MODEL (None: every model id is a dimension value).
    """
    count = event.request_count
    rejected = event.status == "rejected"
    other_model = models is not None and event.model_id not in models
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(event.timestamp.timestamp() * 1000),
            "CloudWatchMetrics": list(_directive(namespace, not rejected)),
        },
        "stage": event.stage,
        "tenant_id": event.tenant_id,
        "model_id": OTHER_MODEL if other_model else event.model_id,
        "kind": KIND,
        "event_id": event.event_id,
        "status": event.status,
        "error_code": event.error_code,
        "cost_usd": event.cost_usd,
        "request_id": event.request_id,
    }
    if other_model:
        document["requested_model_id"] = event.model_id
    # Plain numbers rather than Powertools' lists ([37.0]): EMF takes both, Logs Insights
    # reads a number as the field itself (a list would be `InputTokens.0`), and counts stay
    # integers: a shorter line.
    document.update(
        Requests=count,
        Errors=count if event.status in _ERROR_STATUSES else 0,
        Rejected=count if rejected else 0,
        InputTokens=event.tokens.input_tokens,
        OutputTokens=event.tokens.output_tokens,
        CostUSD=float(Decimal(event.cost_usd)),
    )
    if not rejected:
        document["Latency"] = event.latency_ms
    return document


class EmfCallMetrics:
    """Writes each call's EMF line to stdout, where Lambda sends it to CloudWatch Logs and
    CloudWatch turns it into metrics: no AWS call on the request path. Locally the line lands
    in `chalice local`'s output (.local/logs/api.log). `models`: the stage's models, the
    only `model_id` dimension values (see OTHER_MODEL)."""

    def __init__(
        self,
        *,
        namespace: str = NAMESPACE,
        stream: TextIO | None = None,
        models: Collection[str] | None = None,
    ) -> None:
        self._namespace = namespace
        self._stream = stream
        self._models = frozenset(models) if models is not None else None
        self._lock = threading.Lock()

    def observe(self, event: UsageEvent) -> None:
        """Emit the call's line. Never raises: the call is already billed and recorded, and a
        missing metric must not turn it into an error."""
        try:
            document = emf_document(event, namespace=self._namespace, models=self._models)
            line = json.dumps(document, separators=(",", ":"))
            stream = self._stream or sys.stdout
            with self._lock:  # one whole line at a time, whatever the threads
                stream.write(line + "\n")
                stream.flush()
        except Exception as exc:
            logger.warning(
                "call metrics not written",
                extra={"event_id": event.event_id, "error_type": type(exc).__name__},
            )


class InMemoryCallMetrics:
    """The metrics port's fake: keeps the events it was told about."""

    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def observe(self, event: UsageEvent) -> None:
        self.events.append(event)
