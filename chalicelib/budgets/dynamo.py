"""DynamoDB adapter for plans and month counters: single-item conditional writes only.

Item design (one table, keys pk/sk, TTL attribute `expires_at`):

    pk=TENANT#<tenant>  sk=PLAN            the tenant's plan
    pk=TENANT#<tenant>  sk=MONTH#<yyyy-mm>  month-to-date counters, the current rate window,
                                           open reservations (attributes rsv_<event id>),
                                           alert markers (alert_50, alert_80, alert_100),
                                           in_month_index once listed in the month index
    pk=MONTH#<yyyy-mm>  sk=TENANT#<tenant>  index of the month's active tenants (repair job)

Money counters hold whole pico-dollars (integers; see limits.PICO_PER_USD): ADD on integers
is exact everywhere. The plan's budget is stored as the exact decimal it was given.

Budget, rate window and reservations share one item so that one conditional UpdateItem
checks and reserves all of them atomically. A TransactWriteItems across separate items would
do the same at twice the write cost, and DynamoDB cancels a transaction (TransactionConflict)
whenever another write to one of its items is in progress: on a busy tenant, every
concurrent request.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws_errors import CONDITION_FAILED, error_code
from chalicelib.budgets.limits import (
    ALERT_THRESHOLDS,
    MAX_OPEN_RESERVATIONS,
    Actual,
    Demand,
    Limits,
    MonthCounters,
    Reservation,
    from_pico,
    next_month_start,
    refusal,
    to_pico,
)
from chalicelib.budgets.plans import Plan
from chalicelib.budgets.store import Refused, Reserved, ReserveResult, SettleResult, StoredPlan
from chalicelib.errors import BudgetStoreUnavailableError
from chalicelib.pricing import format_usd
from chalicelib.usage import TOKEN_FIELDS, TokenUsage

logger = logging.getLogger(__name__)

PLAN_SK = "PLAN"
# What DynamoDB answers when a write's condition does not hold: a refusal, not a failure.
RESERVATION_PREFIX = "rsv_"
# Month counters and index entries outlive their month by this much, then TTL removes them.
COUNTERS_RETENTION = timedelta(days=400)
# Attempts at one reservation: a minute boundary (or a clock a little ahead on another
# instance) costs one retry; more than a few means heavy contention on the item.
MAX_RESERVE_ATTEMPTS = 4
# Per-process hint of each tenant's current rate window, only to choose which form of the
# reserve write to try first. Counting is always done by DynamoDB.
_WINDOW_HINTS_MAX = 10_000
UNAVAILABLE = "Budgets cannot be checked right now, so the request was not run. Please retry."

_BUDGET_CONDITION = (
    "(attribute_not_exists(committed_pico_usd) OR committed_pico_usd <= :left)"
    " AND (attribute_not_exists(open_reservations) OR open_reservations < :max_open)"
)
# The rate window already open on the item is ours: count this request in it.
RESERVE_IN_WINDOW = {
    "update": (
        "SET #rsv = :rsv, expires_at = if_not_exists(expires_at, :ttl)"
        " ADD committed_pico_usd :usd, reserved_pico_usd :usd, open_reservations :one,"
        " rate_requests :one, rate_tokens :tokens"
    ),
    "condition": (
        f"{_BUDGET_CONDITION} AND rate_window = :window"
        " AND rate_requests < :rpm AND rate_tokens <= :tpm_left"
    ),
}
# No window yet, or an older one: this request opens the new window.
RESERVE_NEW_WINDOW = {
    "update": (
        "SET #rsv = :rsv, expires_at = if_not_exists(expires_at, :ttl),"
        " rate_window = :window, rate_requests = :one, rate_tokens = :tokens"
        " ADD committed_pico_usd :usd, reserved_pico_usd :usd, open_reservations :one"
    ),
    "condition": (
        f"{_BUDGET_CONDITION} AND (attribute_not_exists(rate_window) OR rate_window < :window)"
    ),
}


def tenant_pk(tenant_id: str) -> str:
    return f"TENANT#{tenant_id}"


def month_sk(month: str) -> str:
    return f"MONTH#{month}"


@functools.lru_cache(maxsize=64)
def counters_expire_at(month: str) -> int:
    """Epoch seconds when a month's counters may be deleted by TTL."""
    start = datetime.strptime(month + "-01", "%Y-%m-%d").replace(tzinfo=UTC)
    return int((next_month_start(start) + COUNTERS_RETENTION).timestamp())


_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def encode(values: Mapping[str, Any]) -> dict[str, Any]:
    """Python values as the low-level client's DynamoDB JSON (boto3's TypeSerializer).

    Numbers must be int or Decimal (a float is refused): money goes in as whole pico-dollars.
    """
    return {name: _encode_value(value) for name, value in values.items()}


# Integers DynamoDB takes as they are (it keeps 38 significant digits).
_EXACT_INT = 10**38


def _encode_value(value: Any) -> dict[str, Any]:
    # The request path's common types directly (TypeSerializer costs a few microseconds per
    # value, and a reserve has a dozen); anything else, Decimals included, through it.
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is bool:
        return {"BOOL": value}
    if kind is int and -_EXACT_INT < value < _EXACT_INT:
        return {"N": str(value)}
    if kind is dict:
        return {"M": {str(k): _encode_value(v) for k, v in value.items()}}
    return _SERIALIZER.serialize(value)  # type: ignore[no-any-return]


def decode(item: Mapping[str, Any] | None) -> dict[str, Any]:
    """DynamoDB JSON as Python values (every number a Decimal); None is an empty item."""
    return {name: _DESERIALIZER.deserialize(value) for name, value in (item or {}).items()}


def _count(values: Mapping[str, Any], name: str) -> int:
    """A whole-number attribute; one never written (a counter never added to) is zero."""
    return int(values.get(name, 0))


def _usd(values: Mapping[str, Any], name: str) -> Decimal:
    return from_pico(_count(values, name))


def counters_from_item(tenant_id: str, month: str, item: Mapping[str, Any] | None) -> MonthCounters:
    """Decode a month item (DynamoDB JSON); an absent item is a month with nothing in it."""
    values = decode(item)
    if not values:
        return MonthCounters(tenant_id, month)
    reservations = [
        Reservation(
            tenant_id=tenant_id,
            month=month,
            reservation_id=name.removeprefix(RESERVATION_PREFIX),
            usd=_usd(fields, "pico_usd"),
            tokens=_count(fields, "tokens"),
            window=fields["window"],
            expires_at=_count(fields, "expires_at"),
            event_timestamp=fields["at"],
        )
        for name, fields in values.items()
        if name.startswith(RESERVATION_PREFIX)
    ]
    return MonthCounters(
        tenant_id=tenant_id,
        month=month,
        committed_usd=_usd(values, "committed_pico_usd"),
        reserved_usd=_usd(values, "reserved_pico_usd"),
        settled_usd=_usd(values, "settled_pico_usd"),
        open_reservations=_count(values, "open_reservations"),
        requests=_count(values, "requests"),
        tokens=TokenUsage.from_record(values, absent_is_zero=True),
        rate_window=values.get("rate_window"),
        rate_requests=_count(values, "rate_requests"),
        rate_tokens=_count(values, "rate_tokens"),
        reservations=tuple(sorted(reservations, key=lambda r: r.expires_at)),
        alerts={p: values[f"alert_{p}"] for p in ALERT_THRESHOLDS if f"alert_{p}" in values},
        indexed=bool(values.get("in_month_index")),
        aborted_usd=_usd(values, "aborted_pico_usd"),
        aborted_requests=_count(values, "aborted_requests"),
    )


def _reservation_value(reservation: Reservation) -> dict[str, Any]:
    """A reservation as the map stored in its rsv_<id> attribute."""
    return {
        "pico_usd": to_pico(reservation.usd),
        "tokens": reservation.tokens,
        "window": reservation.window,
        "expires_at": reservation.expires_at,
        "at": reservation.event_timestamp,
    }


class DynamoBudgetStore:
    """Plans and counters in the plans table (PLANS_TABLE)."""

    def __init__(self, table_name: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self._client = client
        self._table = table_name
        self._window_hints: dict[str, str] = {}

    # -- plans -----------------------------------------------------------------------------

    def get_plan(self, tenant_id: str) -> StoredPlan | None:
        """The tenant's own plan, or None (it then gets the stage default)."""
        item = self._call(
            "get_item",
            Key=encode({"pk": tenant_pk(tenant_id), "sk": PLAN_SK}),
            ConsistentRead=True,
        ).get("Item")
        values = decode(item)
        if not values:
            return None
        plan = Plan(
            monthly_budget_usd=values.get("monthly_budget_usd", Decimal(0)),
            tokens_per_minute=_count(values, "tokens_per_minute"),
            requests_per_minute=_count(values, "requests_per_minute"),
            allowed_models=tuple(values.get("allowed_models", ())),
        )
        return StoredPlan(plan, values["updated_at"], values["updated_by"])

    def put_plan(
        self, tenant_id: str, plan: Plan, *, updated_by: str, updated_at: datetime
    ) -> None:
        """Replace the tenant's plan (the budget is stored as an exact DynamoDB number)."""
        self._call(
            "put_item",
            Item=encode(
                {
                    "pk": tenant_pk(tenant_id),
                    "sk": PLAN_SK,
                    "tenant_id": tenant_id,
                    # Plain fixed-point digits ("25.5", never "2.55E+1"), as always stored.
                    "monthly_budget_usd": Decimal(format_usd(plan.monthly_budget_usd)),
                    "tokens_per_minute": plan.tokens_per_minute,
                    "requests_per_minute": plan.requests_per_minute,
                    "allowed_models": list(plan.allowed_models),
                    "updated_at": updated_at.isoformat(),
                    "updated_by": updated_by,
                }
            ),
        )

    # -- counters --------------------------------------------------------------------------

    def get_month(self, tenant_id: str, month: str) -> MonthCounters:
        """The tenant's counters for a month (zeros if it has none)."""
        item = self._call(
            "get_item", Key=self._month_key(tenant_id, month), ConsistentRead=True
        ).get("Item")
        return counters_from_item(tenant_id, month, item)

    def reserve(self, reservation: Reservation, limits: Limits, now: datetime) -> ReserveResult:
        """One conditional UpdateItem: budget, in-flight cap and rate window, or nothing.

        On a failed condition DynamoDB returns the item as it was (ALL_OLD); if no limit
        explains the failure, the rate window had moved on and the other form is tried.
        """
        tenant = reservation.tenant_id
        demand = Demand(reservation.tokens, reservation.usd)
        window = reservation.window
        in_window = self._window_hints.get(tenant) == window
        for _ in range(MAX_RESERVE_ATTEMPTS):
            held = dataclasses.replace(reservation, window=window)
            try:
                self._update_for_reserve(held, limits, in_window=in_window)
            except ClientError as exc:
                if error_code(exc) != CONDITION_FAILED:
                    raise self._unavailable("reserve", exc) from exc
                old = counters_from_item(tenant, reservation.month, exc.response.get("Item"))
                refused = refusal(old, limits, demand, window, now)
                if refused is not None:
                    return Refused(refused, old)
                in_window = old.rate_window is not None and old.rate_window >= window
                if in_window and old.rate_window:
                    window = old.rate_window
                continue
            except BotoCoreError as exc:
                raise self._unavailable("reserve", exc) from exc
            self._remember_window(tenant, window)
            return Reserved(held)
        logger.warning("reservation contention", extra={"attempts": MAX_RESERVE_ATTEMPTS})
        raise BudgetStoreUnavailableError(UNAVAILABLE)

    def _update_for_reserve(
        self, reservation: Reservation, limits: Limits, *, in_window: bool
    ) -> dict[str, Any]:
        form = RESERVE_IN_WINDOW if in_window else RESERVE_NEW_WINDOW
        values: dict[str, Any] = {
            ":rsv": _reservation_value(reservation),
            ":ttl": counters_expire_at(reservation.month),
            ":usd": to_pico(reservation.usd),
            ":one": 1,
            ":tokens": reservation.tokens,
            ":left": to_pico(limits.monthly_budget_usd - reservation.usd),
            ":max_open": MAX_OPEN_RESERVATIONS,
            ":window": reservation.window,
        }
        if in_window:
            values[":rpm"] = limits.requests_per_minute
            values[":tpm_left"] = limits.tokens_per_minute - reservation.tokens
        # Nothing is read back on success: the item holds every open reservation, and
        # reading them all with each request would cost CPU and read capacity for nothing.
        return self._client.update_item(  # type: ignore[no-any-return]
            TableName=self._table,
            Key=self._month_key(reservation.tenant_id, reservation.month),
            UpdateExpression=form["update"],
            ConditionExpression=form["condition"],
            ExpressionAttributeNames={"#rsv": RESERVATION_PREFIX + reservation.reservation_id},
            ExpressionAttributeValues=encode(values),
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

    def settle(
        self,
        reservation: Reservation,
        actual: Actual | None,
        *,
        current_window: str,
        aborted: bool = False,
    ) -> SettleResult:
        """One conditional UpdateItem: drop the open reservation, add what was really used.

        The condition `attribute_exists(#rsv)` makes it happen at most once, whoever settles
        (the request, or the repair job after the reservation expired). The rate window's
        token count is corrected only while it is still the reservation's window. Only the
        counters it adds to are read back (UPDATED_NEW), never the open reservations.
        """
        correct_rate = reservation.window == current_window
        for _ in range(2):
            try:
                response = self._update_for_settle(reservation, actual, correct_rate, aborted)
            except ClientError as exc:
                if error_code(exc) != CONDITION_FAILED:
                    raise self._unavailable("settle", exc) from exc
                item = exc.response.get("Item") or {}
                if correct_rate and RESERVATION_PREFIX + reservation.reservation_id in item:
                    correct_rate = False  # the window moved on: settle without correcting it
                    continue
                return SettleResult(False)
            except BotoCoreError as exc:
                raise self._unavailable("settle", exc) from exc
            settled = decode(response.get("Attributes")).get("settled_pico_usd", 0)
            return SettleResult(True, from_pico(int(settled)), correct_rate)
        raise BudgetStoreUnavailableError(UNAVAILABLE)  # pragma: no cover (loop returns)

    def _update_for_settle(
        self,
        reservation: Reservation,
        actual: Actual | None,
        correct_rate: bool,
        aborted: bool,
    ) -> dict[str, Any]:
        used = actual or Actual(usd=Decimal(0))
        adds = [
            "committed_pico_usd :delta",
            "reserved_pico_usd :released",
            "open_reservations :minus_one",
            "settled_pico_usd :usd",
        ]
        values: dict[str, Any] = {
            ":delta": to_pico(used.usd - reservation.usd),
            ":released": to_pico(-reservation.usd),
            ":minus_one": -1,
            ":usd": to_pico(used.usd),
        }
        if actual is not None:
            adds.append("requests :one")
            values[":one"] = 1
            for name, count in actual.tokens.as_dict().items():  # each counter under its name
                adds.append(f"{name} :{name}")
                values[f":{name}"] = count
        elif aborted:
            adds += ["aborted_pico_usd :exposure", "aborted_requests :one"]
            values.update({":exposure": to_pico(reservation.usd), ":one": 1})
        condition = "attribute_exists(#rsv)"
        if correct_rate:
            adds.append("rate_tokens :rate_delta")
            values[":rate_delta"] = used.tokens.total_tokens - reservation.tokens
            values[":window"] = reservation.window
            condition += " AND rate_window = :window"
        return self._client.update_item(  # type: ignore[no-any-return]
            TableName=self._table,
            Key=self._month_key(reservation.tenant_id, reservation.month),
            UpdateExpression="REMOVE #rsv ADD " + ", ".join(adds),
            ConditionExpression=condition,
            ExpressionAttributeNames={"#rsv": RESERVATION_PREFIX + reservation.reservation_id},
            ExpressionAttributeValues=encode(values),
            ReturnValues="UPDATED_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

    def unsettle(self, reservation: Reservation, actual: Actual, *, rate_corrected: bool) -> bool:
        """One conditional UpdateItem, the inverse of an applied settle (see BudgetStore).

        `attribute_not_exists(#rsv)` holds only between the settle and this write: the zero
        reservation it leaves makes a retry (or a late duplicate) fail the condition until
        the repair job releases it, long after any retry could arrive.
        """
        zero = dataclasses.replace(reservation, usd=Decimal(0), tokens=0)
        adds = [
            "committed_pico_usd :minus_usd",
            "settled_pico_usd :minus_usd",
            "open_reservations :one",
            "requests :minus_one",
        ]
        values: dict[str, Any] = {
            ":zero": _reservation_value(zero),
            ":minus_usd": -to_pico(actual.usd),
            ":one": 1,
            ":minus_one": -1,
        }
        for name in TOKEN_FIELDS:
            adds.append(f"{name} :{name}")
            values[f":{name}"] = -getattr(actual.tokens, name)
        condition = "attribute_not_exists(#rsv)"
        undo_rate = rate_corrected
        for _ in range(2):
            rate: dict[str, Any] = {}
            if undo_rate:
                rate = {":rate_back": -actual.tokens.total_tokens, ":window": reservation.window}
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key=self._month_key(reservation.tenant_id, reservation.month),
                    UpdateExpression="SET #rsv = :zero ADD "
                    + ", ".join([*adds, "rate_tokens :rate_back"] if undo_rate else adds),
                    ConditionExpression=(
                        condition + " AND rate_window = :window" if undo_rate else condition
                    ),
                    ExpressionAttributeNames={
                        "#rsv": RESERVATION_PREFIX + reservation.reservation_id
                    },
                    ExpressionAttributeValues=encode({**values, **rate}),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as exc:
                if error_code(exc) != CONDITION_FAILED:
                    raise self._unavailable("unsettle", exc) from exc
                item = exc.response.get("Item") or {}
                if undo_rate and RESERVATION_PREFIX + reservation.reservation_id not in item:
                    undo_rate = False  # the window moved on: leave the new one's count alone
                    continue
                return False
            except BotoCoreError as exc:
                raise self._unavailable("unsettle", exc) from exc
            return True
        return False  # pragma: no cover (loop returns)

    # -- the month index (what the repair job walks) -----------------------------------------

    def register_month(self, tenant_id: str, month: str) -> None:
        """Add the tenant to the month's index, then flag its month item as indexed."""
        expires = counters_expire_at(month)
        self._call(
            "put_item",
            Item=encode(
                {
                    "pk": month_sk(month),
                    "sk": tenant_pk(tenant_id),
                    "tenant_id": tenant_id,
                    "expires_at": expires,
                }
            ),
        )
        self._call(
            "update_item",
            Key=self._month_key(tenant_id, month),
            UpdateExpression=(
                "SET in_month_index = :yes, expires_at = if_not_exists(expires_at, :ttl)"
            ),
            ExpressionAttributeValues=encode({":yes": True, ":ttl": expires}),
        )

    def month_tenants(self, month: str) -> list[str]:
        """Every tenant indexed for the month."""
        tenants: list[str] = []
        start: dict[str, Any] | None = None
        while True:
            extra = {"ExclusiveStartKey": start} if start else {}
            page = self._call(
                "query",
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues=encode({":pk": month_sk(month)}),
                ProjectionExpression="tenant_id",
                **extra,
            )
            tenants.extend(decode(item)["tenant_id"] for item in page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                return tenants

    # -- alert markers ---------------------------------------------------------------------

    def claim_alert(
        self, tenant_id: str, month: str, percent: int, claim: str, replacing: str | None
    ) -> bool:
        """Conditional SET of alert_<percent>: exactly one caller wins each claim."""
        values = {":claim": claim}
        if replacing is None:
            condition = "attribute_exists(pk) AND attribute_not_exists(#alert)"
        else:
            condition = "#alert = :replacing"
            values[":replacing"] = replacing
        return self._conditional_set(tenant_id, month, percent, condition, values)

    def mark_alert_sent(
        self, tenant_id: str, month: str, percent: int, claim: str, sent: str
    ) -> bool:
        """Conditional SET of alert_<percent> from our claim to `sent`."""
        values = {":claim": sent, ":replacing": claim}
        return self._conditional_set(tenant_id, month, percent, "#alert = :replacing", values)

    def _conditional_set(
        self,
        tenant_id: str,
        month: str,
        percent: int,
        condition: str,
        values: dict[str, str],
    ) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._month_key(tenant_id, month),
                UpdateExpression="SET #alert = :claim",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#alert": f"alert_{percent}"},
                ExpressionAttributeValues=encode(values),
            )
        except ClientError as exc:
            if error_code(exc) == CONDITION_FAILED:
                return False
            raise self._unavailable("alert", exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("alert", exc) from exc
        return True

    # -- plumbing --------------------------------------------------------------------------

    def _month_key(self, tenant_id: str, month: str) -> dict[str, Any]:
        return encode({"pk": tenant_pk(tenant_id), "sk": month_sk(month)})

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(self._client, operation)(
                TableName=self._table, **kwargs
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(operation, exc) from exc
        return response

    def _remember_window(self, tenant_id: str, window: str) -> None:
        if len(self._window_hints) >= _WINDOW_HINTS_MAX:
            self._window_hints.clear()
        self._window_hints[tenant_id] = window

    @staticmethod
    def _unavailable(operation: str, exc: Exception) -> BudgetStoreUnavailableError:
        logger.warning(
            "budget store call failed",
            extra={"operation": operation, "error": error_code(exc)},
        )
        return BudgetStoreUnavailableError(UNAVAILABLE)
