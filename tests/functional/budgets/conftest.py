"""Budget fixtures: the plans table and alerts topic on moto, a settable clock, helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import wiring
from chalicelib.bedrock import BedrockModel
from chalicelib.identity import IdTokenVerifier
from chalicelib.settings import Settings
from tests.functional.conftest import (
    TOKENS,
    Bedrock,
    auth,
    create_usage_pipeline,
    make_settings,
)
from tests.support.tokens import CLIENT_ID, ISSUER, REGION

PLANS_TABLE = "bedrock-metering-test-plans"
TOPIC = "bedrock-metering-test-budget-alerts"


def create_plans_table(client: Any = None) -> None:
    """The PlansTable of analytics_infra/template.yaml (keys pk/sk, on-demand)."""
    dynamodb = client or boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName=PLANS_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
    )


@dataclass
class Alerts:
    """The alerts topic and an SQS queue subscribed to it, to read what was published."""

    topic_arn: str
    queue_url: str
    seen: list[dict[str, Any]] = field(default_factory=list)

    def messages(self) -> list[dict[str, Any]]:
        """Every alert published so far (the JSON message bodies), oldest first."""
        sqs = boto3.client("sqs", region_name=REGION)
        while True:
            batch = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not batch:
                return list(self.seen)
            for message in batch:
                envelope = json.loads(message["Body"])
                self.seen.append(json.loads(envelope["Message"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def thresholds(self, tenant_id: str) -> list[int]:
        return [m["threshold_percent"] for m in self.messages() if m["tenant_id"] == tenant_id]


def create_alerts() -> Alerts:
    sns = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
    queue_url = sqs.create_queue(QueueName="budget-alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return Alerts(topic_arn, queue_url)


class Clock:
    """A settable UTC clock for the budget (minutes, months)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def set(self, moment: datetime) -> None:
        self.now = moment


def budget_settings(topic_arn: str = "", **overrides: str) -> Settings:
    return make_settings(
        BUDGETS_ENABLED="true",
        PLANS_TABLE=PLANS_TABLE,
        ALERTS_TOPIC_ARN=topic_arn,
        DEFAULT_MONTHLY_BUDGET_USD="100",
        DEFAULT_TOKENS_PER_MINUTE="100000",
        DEFAULT_REQUESTS_PER_MINUTE="60",
        **overrides,
    )


@dataclass
class BudgetEnv:
    settings: Settings
    clock: Clock
    alerts: Alerts
    bedrock: Bedrock


@pytest.fixture
def budget_env(aws: None, bedrock: Bedrock) -> Iterator[BudgetEnv]:
    """The app on moto with budgets on, alerts to an SQS inbox, the clock mid-month."""
    create_usage_pipeline()
    create_plans_table()
    alerts = create_alerts()
    settings = budget_settings(alerts.topic_arn)
    clock = Clock(datetime(2026, 11, 14, 12, 0, 5, tzinfo=UTC))
    wiring.reset()
    wiring.override(
        settings=settings,
        model=BedrockModel(bedrock.client),
        verifier=IdTokenVerifier(issuer=ISSUER, audience=CLIENT_ID, keys=TOKENS.keys),
        budget_clock=clock,
    )
    yield BudgetEnv(settings, clock, alerts, bedrock)
    wiring.reset()


@pytest.fixture
def client(budget_env: BudgetEnv) -> Iterator[Client]:
    from app import app

    with Client(app) as test_client:
        yield test_client


def admin_auth(tenant_id: str = "provider") -> dict[str, str]:
    return auth(tenant_id, **{"cognito:groups": ["admins"], "cognito:username": "ops"})


def set_plan(client: Client, tenant_id: str, **plan: Any) -> Any:
    body = {
        "monthly_budget_usd": "100",
        "tokens_per_minute": 100_000,
        "requests_per_minute": 60,
        **plan,
    }
    response = client.http.put(
        f"/admin/tenants/{tenant_id}/plan", headers=admin_auth(), body=json.dumps(body)
    )
    assert response.status_code == 200, response.json_body
    return response.json_body


def chat(client: Client, tenant_id: str = "tenant-a", **body: Any) -> Any:
    payload = {"prompt": "hi", **body}
    return client.http.post("/bedrock/chat", headers=auth(tenant_id), body=json.dumps(payload))
