"""Budget threshold alerts: one SNS notification per threshold per tenant per month.

A threshold's marker on the month item (alert_50, alert_80, alert_100) is claimed with a
conditional write BEFORE publishing, so of any number of concurrent requests (and the repair
job) exactly one publishes. The marker reads "pending <time>" until the publish succeeds and
"sent <time>" after. A publish that fails leaves it pending; the repair job re-claims markers
pending for longer than ALERT_RETRY_AFTER_S (again conditionally, so one retrier wins) and
publishes again. A duplicate is possible only when SNS accepted the message but the marker
could not be turned to "sent"; every message carries a stable `alert_id` for subscribers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.budgets.limits import MonthCounters
from chalicelib.budgets.plans import money_text
from chalicelib.budgets.store import BudgetStore
from chalicelib.errors import BudgetStoreUnavailableError, MeteringError

logger = logging.getLogger(__name__)

ALERT_RETRY_AFTER_S = 120
PENDING = "pending"
SENT = "sent"
SUBJECT_MAX_CHARS = 100  # SNS limit for email subjects

AlertReason = Literal["spend", "exhausted"]


class AlertNotSentError(MeteringError):
    """SNS did not accept the alert."""


@dataclass(frozen=True)
class BudgetAlert:
    """A tenant reached a share of its monthly budget."""

    tenant_id: str
    month: str
    percent: int
    monthly_budget_usd: Decimal
    spent_usd: Decimal
    reason: AlertReason = "spend"

    @property
    def alert_id(self) -> str:
        """Stable per tenant, month and threshold: subscribers can drop duplicates by it."""
        return f"{self.tenant_id}/{self.month}/{self.percent}"

    @property
    def subject(self) -> str:
        text = f"Budget {self.percent}% reached: tenant {self.tenant_id} ({self.month})"
        return text.encode("ascii", "replace").decode()[:SUBJECT_MAX_CHARS]

    def message(self) -> str:
        """The notification body (JSON)."""
        if self.reason == "exhausted":
            summary = "The monthly budget is used up: requests are now refused with 429."
        else:
            summary = f"Spend reached {self.percent}% of the monthly budget."
        return json.dumps(
            {
                "alert_id": self.alert_id,
                "tenant_id": self.tenant_id,
                "month": self.month,
                "threshold_percent": self.percent,
                "reason": self.reason,
                "monthly_budget_usd": money_text(self.monthly_budget_usd),
                "spent_usd": money_text(self.spent_usd),
                "summary": summary,
            },
            sort_keys=True,
        )


class AlertPublisher(Protocol):
    """Where alerts go (SnsAlertPublisher in production)."""

    def publish(self, alert: BudgetAlert) -> None:
        """Deliver one alert; raise AlertNotSentError if it was not accepted."""
        ...


class SnsAlertPublisher:
    """Publishes alerts to the budget-alerts topic (ALERTS_TOPIC_ARN)."""

    def __init__(self, topic_arn: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("sns")
        self._client = client
        self._topic_arn = topic_arn

    def publish(self, alert: BudgetAlert) -> None:
        try:
            self._client.publish(
                TopicArn=self._topic_arn,
                Subject=alert.subject,
                Message=alert.message(),
                MessageAttributes={
                    "tenant_id": {"DataType": "String", "StringValue": alert.tenant_id},
                    "month": {"DataType": "String", "StringValue": alert.month},
                    "threshold_percent": {"DataType": "Number", "StringValue": str(alert.percent)},
                    "alert_id": {"DataType": "String", "StringValue": alert.alert_id},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise AlertNotSentError(f"SNS publish failed: {type(exc).__name__}") from exc


class InMemoryAlertPublisher:
    """Keeps published alerts in a list; `failures` makes the next n publishes fail."""

    def __init__(self) -> None:
        self.sent: list[BudgetAlert] = []
        self.failures = 0

    def publish(self, alert: BudgetAlert) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise AlertNotSentError("injected publish failure")
        self.sent.append(alert)


def marker(state: str, at: datetime) -> str:
    """A threshold marker value: "pending <time>" or "sent <time>"."""
    return f"{state} {at.astimezone(UTC).isoformat(timespec='seconds')}"


def pending_since(value: str) -> datetime | None:
    """When a pending marker was claimed; None for any other marker."""
    state, _, at = value.partition(" ")
    if state != PENDING:
        return None
    try:
        return datetime.fromisoformat(at)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)  # unreadable: treat as long overdue


class BudgetAlerts:
    """Claims a threshold once, publishes, and marks it sent."""

    def __init__(
        self,
        store: BudgetStore,
        publisher: AlertPublisher,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_after_s: int = ALERT_RETRY_AFTER_S,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._now = now
        self._retry_after_s = retry_after_s

    def send_once(self, alert: BudgetAlert) -> bool:
        """Publish unless this tenant-month-threshold was claimed before; never raises."""
        claim = marker(PENDING, self._now())
        try:
            won = self._store.claim_alert(
                alert.tenant_id, alert.month, alert.percent, claim, replacing=None
            )
        except BudgetStoreUnavailableError:
            logger.warning("alert not claimed; the repair job checks again", extra=_ids(alert))
            return False
        return won and self._publish(alert, claim)

    def retry_stale(self, counters: MonthCounters, alert_for: Callable[[int], BudgetAlert]) -> int:
        """Re-publish alerts left pending longer than the retry delay; returns how many."""
        sent = 0
        now = self._now()
        for percent, value in sorted(counters.alerts.items()):
            since = pending_since(value)
            if since is None or (now - since).total_seconds() < self._retry_after_s:
                continue
            claim = marker(PENDING, now)
            if self._store.claim_alert(
                counters.tenant_id, counters.month, percent, claim, replacing=value
            ):
                sent += self._publish(alert_for(percent), claim)
        return sent

    def _publish(self, alert: BudgetAlert, claim: str) -> bool:
        try:
            self._publisher.publish(alert)
        except AlertNotSentError:
            logger.warning("alert publish failed; left pending for a retry", extra=_ids(alert))
            return False
        try:
            self._store.mark_alert_sent(
                alert.tenant_id, alert.month, alert.percent, claim, marker(SENT, self._now())
            )
        except BudgetStoreUnavailableError:
            # Published, but still marked pending: a retry may send it a second time.
            logger.warning("alert sent but not marked sent", extra=_ids(alert))
        logger.info("budget alert sent", extra=_ids(alert))
        return True


def _ids(alert: BudgetAlert) -> dict[str, str]:
    return {"alert_id": alert.alert_id}
