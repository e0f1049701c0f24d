"""Live call metrics: the EMF line's shape, when the chat service emits it, and what it costs."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.bedrock import ModelReply
from chalicelib.budgets.plans import Plan
from chalicelib.budgets.service import BudgetService
from chalicelib.budgets.store import InMemoryBudgetStore, StoredPlan
from chalicelib.chat import ChatRequest, ChatService
from chalicelib.conversation import Conversation
from chalicelib.errors import ModelUnavailableError, RateLimitedError, UsageNotDurableError
from chalicelib.identity import Caller
from chalicelib.metrics import (
    DIMENSIONS,
    KIND,
    METRIC_UNITS,
    NAMESPACE,
    OTHER_MODEL,
    EmfCallMetrics,
    InMemoryCallMetrics,
    emf_document,
)
from chalicelib.pricing import load_price_table
from chalicelib.settings import DEFAULT_MODEL_ID
from chalicelib.usage import TokenUsage, UsageEvent
from local.provision import load_template

AT = datetime(2026, 11, 30, 12, 0, 1, 250_000, tzinfo=UTC)
LOGS_INSIGHTS = "docs/metrics.md"


def call_event(**overrides: Any) -> UsageEvent:
    fields: dict[str, Any] = {
        "event_id": "91ca3ed3-0000-4000-8000-000000000001",
        "timestamp": AT,
        "tenant_id": "tenant-001",
        "user_id": "user-1",
        "model_id": DEFAULT_MODEL_ID,
        "tokens": TokenUsage(input_tokens=37, output_tokens=64, total_tokens=101),
        "status": "ok",
        "error_code": None,
        "latency_ms": 934,
        "cost_usd": "0.00008925",
        "price_version": "2026-11-27",
        "request_id": "req-1",
        "stage": "dev",
    }
    return UsageEvent(**{**fields, **overrides})


def test_a_call_is_one_emf_document_with_its_metrics_dimensions_and_fields() -> None:
    document = emf_document(call_event())
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE == "BedrockSaaSMetering"
    assert directive["Dimensions"] == [["stage", "tenant_id", "model_id"]]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == dict(METRIC_UNITS)
    assert document["_aws"]["Timestamp"] == int(AT.timestamp() * 1000)
    assert {k: v for k, v in document.items() if k != "_aws"} == {
        "stage": "dev",
        "tenant_id": "tenant-001",
        "model_id": DEFAULT_MODEL_ID,
        "kind": KIND,
        "event_id": "91ca3ed3-0000-4000-8000-000000000001",
        "status": "ok",
        "error_code": None,
        "cost_usd": "0.00008925",
        "request_id": "req-1",
        "Requests": 1,
        "Errors": 0,
        "Rejected": 0,
        "InputTokens": 37,
        "OutputTokens": 64,
        "CostUSD": 8.925e-05,
        "Latency": 934,
    }


def test_a_model_error_counts_as_an_error_with_its_code_and_latency() -> None:
    document = emf_document(call_event(status="error", error_code="ThrottlingException"))
    assert (document["Errors"], document["Rejected"], document["Latency"]) == (1, 0, 934)
    assert (document["status"], document["error_code"]) == ("error", "ThrottlingException")


def test_aggregated_refusals_count_as_many_rejected_requests_without_latency() -> None:
    event = call_event(
        status="rejected",
        error_code="RateLimited",
        request_count=3,
        tokens=TokenUsage(),
        cost_usd="0",
    )
    document = emf_document(event)
    assert (document["Requests"], document["Rejected"], document["Errors"]) == (3, 3, 0)
    assert "Latency" not in document
    assert "Latency" not in {m["Name"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


def test_each_line_gets_the_directive_of_its_own_shape_whatever_came_before() -> None:
    # The directive is built once per shape and shared: a refusal's (no Latency) must not
    # leak into the next answered call's, nor the other way round.
    refused = call_event(status="rejected", error_code="RateLimited", tokens=TokenUsage())

    def metric_names(document: dict[str, Any]) -> set[str]:
        return {m["Name"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]}

    shapes = [metric_names(emf_document(e)) for e in (refused, call_event(), refused)]
    assert shapes == [
        set(METRIC_UNITS) - {"Latency"},
        set(METRIC_UNITS),
        set(METRIC_UNITS) - {"Latency"},
    ]
    assert (
        emf_document(call_event(), namespace="Other")["_aws"]["CloudWatchMetrics"][0]["Namespace"]
        == "Other"
    )


@pytest.mark.parametrize(
    ("model_id", "error_code"),
    [("acme.mystery-model-v1:0", "ModelNotPriced"), ("amazon.nova-pro-v1:0", "ModelNotAllowed")],
)
def test_a_refused_model_the_stage_does_not_offer_is_no_dimension_value(
    model_id: str, error_code: str
) -> None:
    # Every distinct dimension value is a billed custom metric: the ids a caller types must
    # not become one each.
    event = call_event(
        model_id=model_id, status="rejected", error_code=error_code, tokens=TokenUsage()
    )
    document = emf_document(event, models=(DEFAULT_MODEL_ID, "amazon.nova-micro-v1:0"))
    assert (document["model_id"], document["requested_model_id"]) == (OTHER_MODEL, model_id)
    offered = emf_document(call_event(), models=(DEFAULT_MODEL_ID,))
    assert offered["model_id"] == DEFAULT_MODEL_ID
    assert "requested_model_id" not in offered


def test_a_powertools_service_name_does_not_add_a_dimension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "something-else")
    document = emf_document(call_event())
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [list(DIMENSIONS)]
    assert "service" not in document


def test_the_emitter_writes_one_json_line_per_call() -> None:
    stream = io.StringIO()
    metrics = EmfCallMetrics(stream=stream)
    metrics.observe(call_event())
    metrics.observe(call_event(event_id="e2"))
    lines = stream.getvalue().splitlines(keepends=True)
    assert len(lines) == 2
    assert all(line.endswith("}\n") for line in lines)
    assert [json.loads(line)["event_id"] for line in lines] == [
        "91ca3ed3-0000-4000-8000-000000000001",
        "e2",
    ]
    # What a call costs in CloudWatch Logs ingestion: well under a kilobyte.
    assert len(lines[0].encode()) < 1024


def test_a_failing_stream_never_fails_the_call(caplog: pytest.LogCaptureFixture) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise ValueError("I/O operation on closed file")

    import logging

    logging.getLogger("chalicelib").addHandler(caplog.handler)
    try:
        EmfCallMetrics(stream=Closed()).observe(call_event())
    finally:
        logging.getLogger("chalicelib").removeHandler(caplog.handler)
    assert {r.getMessage() for r in caplog.records} == {"call metrics not written"}


# --------------------------------------------------------------------------- the chat hook

PRICES = load_price_table()
CALLER = Caller("tenant-001", "user-1", "alice", frozenset())


class Recorder:
    def __init__(self, metrics: InMemoryCallMetrics, broken: bool = False) -> None:
        self.metrics = metrics
        self.broken = broken
        self.seen_by_metrics_before_record: list[int] = []
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent, *, deadline: float | None = None) -> str:
        self.seen_by_metrics_before_record.append(len(self.metrics.events))
        if self.broken:
            raise UsageNotDurableError("nothing took it")
        self.events.append(event)
        return "firehose"


class Model:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def converse(self, model_id: str, conversation: Conversation, max_tokens: int) -> ModelReply:
        if self.fail:
            raise ModelUnavailableError("The model failed.", "ModelErrorException")
        return ModelReply("hi", TokenUsage(input_tokens=5, output_tokens=2, total_tokens=7), "x")


def service(
    metrics: InMemoryCallMetrics, recorder: Recorder, model: Model, budget: Any = None
) -> ChatService:
    return ChatService(
        model=model,
        recorder=recorder,
        prices=PRICES,
        model_id=DEFAULT_MODEL_ID,
        stage="test",
        budget=budget,
        metrics=metrics,
    )


def test_each_recorded_call_is_observed_once_after_its_event_is_durable() -> None:
    metrics = InMemoryCallMetrics()
    recorder = Recorder(metrics)
    result = service(metrics, recorder, Model()).chat(CALLER, ChatRequest.from_prompt("hi", 8), "r")
    assert [e.event_id for e in metrics.events] == [result.event_id]
    assert metrics.events == recorder.events
    assert recorder.seen_by_metrics_before_record == [0]  # recorded first, observed after


def test_a_model_failure_is_observed_with_its_error_status() -> None:
    metrics = InMemoryCallMetrics()
    with pytest.raises(ModelUnavailableError):
        service(metrics, Recorder(metrics), Model(fail=True)).chat(
            CALLER, ChatRequest.from_prompt("hi", 8), "r"
        )
    assert [(e.status, e.error_code) for e in metrics.events] == [("error", "ModelErrorException")]


def test_a_budget_refusal_is_observed_as_rejected() -> None:
    metrics = InMemoryCallMetrics()
    store = InMemoryBudgetStore()
    plan = Plan(Decimal(0), 100_000, 100, (DEFAULT_MODEL_ID,))
    store.plans["tenant-001"] = StoredPlan(plan, "", "test")
    budget = BudgetService(
        store=store,
        prices=PRICES,
        default_plan=plan,
        alerts=None,
        reservation_ttl_s=900,
        default_max_tokens=64,
        now=lambda: AT,
    )
    with pytest.raises(RateLimitedError):
        service(metrics, Recorder(metrics), Model(), budget).chat(
            CALLER, ChatRequest.from_prompt("hi", 8), "r"
        )
    assert [e.status for e in metrics.events] == ["rejected"]


def test_a_call_whose_event_is_not_durable_is_not_observed() -> None:
    metrics = InMemoryCallMetrics()
    with pytest.raises(UsageNotDurableError):
        service(metrics, Recorder(metrics, broken=True), Model()).chat(
            CALLER, ChatRequest.from_prompt("hi", 8), "r"
        )
    assert metrics.events == []


# --------------------------------------------------------------------------- where they are read


def test_the_dashboard_in_the_template_searches_the_emitted_namespace_and_dimensions() -> None:
    template = load_template()
    (dashboard,) = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Dashboard"
    ]
    body = dashboard["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(body)["widgets"]
    schema = "{" + ",".join([NAMESPACE, *sorted(DIMENSIONS)]) + "}"
    searches = re.findall(r"SEARCH\('([^']*)'", body)
    assert searches
    assert all(search.startswith(schema) for search in searches)
    named = set(re.findall(r'MetricName=\\"(\w+)\\"', body))
    assert {"InputTokens", "OutputTokens", "CostUSD"} <= named <= set(METRIC_UNITS)
    titles = " ".join(w["properties"].get("title", "") for w in widgets)
    assert "tenant" in titles
    assert "cost" in titles.lower()


def insights_queries() -> list[str]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / LOGS_INSIGHTS).read_text()
    return re.findall(r"```logs-insights\n(.*?)```", text, flags=re.DOTALL)


def test_the_documented_logs_insights_queries_read_fields_the_line_has() -> None:
    queries = insights_queries()
    assert len(queries) == 3
    line = emf_document(call_event())
    # Identifiers used as fields: after filter/stats/by/sort and inside functions.
    for query in queries:
        assert f'kind = "{KIND}"' in query
        used = set(re.findall(r"\b(?:sum|pct|avg|count|max|ispresent)\((\w+)", query))
        used |= set(re.findall(r"\bby ([\w, ]+)", query)[0].replace(" ", "").split(","))
        assert used - {"*"} <= set(line), query
