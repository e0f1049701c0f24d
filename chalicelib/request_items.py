"""DynamoDB adapter for per-request items in the plans table: idempotency keys, refusal
counters and API rate windows. Single-item conditional writes only.

    pk=TENANT#<tenant>  sk=IDEMPOTENCY#<sha256 of key>      a key's claim and answer (TTL 24 h)
    pk=TENANT#<tenant>  sk=REFUSED#<minute>#<reason>        refusals counted in a minute
    pk=TENANT#<tenant>  sk=RATE#<scope>#<minute>            API requests counted in a minute

Every item has `expires_at` (the table's TTL attribute). DynamoDB deletes expired items only
eventually, so every read and condition here treats an expired item as absent.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.api_limits import RequestLimiterUnavailableError
from chalicelib.aws_errors import CONDITION_FAILED, error_code
from chalicelib.budgets.dynamo import decode, encode, tenant_pk
from chalicelib.errors import IdempotencyStoreUnavailableError
from chalicelib.idempotency import (
    Answer,
    Claimed,
    ClaimResult,
    InFlight,
    KeyRecord,
    decide,
)
from chalicelib.refusals import (
    COUNTER_RETENTION_S,
    RefusalCount,
    RefusalCounterUnavailableError,
)

logger = logging.getLogger(__name__)

IDEMPOTENCY_PREFIX = "IDEMPOTENCY#"
REFUSED_PREFIX = "REFUSED#"
RATE_PREFIX = "RATE#"
# A rate window's counter outlives its minute by this much, then TTL removes it.
RATE_RETENTION_S = 3600
UNAVAILABLE = "Idempotency keys cannot be checked right now, so the request was not run."

_CLAIM_CONDITION = (
    "attribute_not_exists(pk) OR expires_at <= :now"
    " OR (#state = :in_flight AND lease_until <= :now AND fingerprint = :fingerprint)"
)


def _record(item: dict[str, Any] | None, tenant_id: str, digest: str) -> KeyRecord | None:
    values = decode(item)
    if not values:
        return None
    answer = None
    if "answer_status" in values:
        answer = Answer(
            status=int(values["answer_status"]),
            body=str(values["answer_body"]),
            request_id=str(values["answer_request_id"]),
        )
    return KeyRecord(
        tenant_id=tenant_id,
        key_digest=digest,
        fingerprint=str(values.get("fingerprint", "")),
        state="done" if values.get("state") == "done" else "in_flight",
        lease=str(values.get("lease", "")),
        lease_until=float(values.get("lease_until", 0)),
        expires_at=int(values.get("expires_at", 0)),
        answer=answer,
    )


def _seconds(value: float) -> Decimal:
    """Epoch seconds to the millisecond, as a DynamoDB number (never a float)."""
    return Decimal(round(value * 1000)).scaleb(-3)


class DynamoRequestItems:
    """IdempotencyStore, RefusalCounter and RequestLimiter on the plans table."""

    def __init__(self, table_name: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self._client = client
        self._table = table_name

    # -- idempotency keys --------------------------------------------------------------------

    def claim(self, record: KeyRecord, now: float) -> ClaimResult:
        """One conditional PutItem; on a failed condition the record met says what to do."""
        item = {
            "pk": tenant_pk(record.tenant_id),
            "sk": IDEMPOTENCY_PREFIX + record.key_digest,
            "fingerprint": record.fingerprint,
            "state": record.state,
            "lease": record.lease,
            "lease_until": _seconds(record.lease_until),
            "expires_at": record.expires_at,
        }
        try:
            self._client.put_item(
                TableName=self._table,
                Item=encode(item),
                ConditionExpression=_CLAIM_CONDITION,
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=encode(
                    {
                        ":now": _seconds(now),
                        ":in_flight": "in_flight",
                        ":fingerprint": record.fingerprint,
                    }
                ),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise self._idempotency_unavailable("claim", exc) from exc
            found = _record(exc.response.get("Item"), record.tenant_id, record.key_digest)
            outcome = decide(found, record.fingerprint, now) if found else None
            return outcome or InFlight(1)  # changed under us: the next try will know
        except BotoCoreError as exc:
            raise self._idempotency_unavailable("claim", exc) from exc
        return Claimed(record)

    def complete(self, record: KeyRecord, answer: Answer) -> bool:
        """Store the answer under our lease (a conditional UpdateItem)."""
        return self._conditional(
            "update_item",
            Key=self._key(record),
            UpdateExpression=(
                "SET #state = :done, answer_status = :status, answer_body = :body,"
                " answer_request_id = :request_id"
            ),
            ConditionExpression="#lease = :lease",
            ExpressionAttributeNames={"#state": "state", "#lease": "lease"},
            ExpressionAttributeValues=encode(
                {
                    ":done": "done",
                    ":status": answer.status,
                    ":body": answer.body,
                    ":request_id": answer.request_id,
                    ":lease": record.lease,
                }
            ),
        )

    def abandon(self, record: KeyRecord) -> bool:
        """Delete the claim if it is still ours."""
        return self._conditional(
            "delete_item",
            Key=self._key(record),
            ConditionExpression="#lease = :lease",
            ExpressionAttributeNames={"#lease": "lease"},
            ExpressionAttributeValues=encode({":lease": record.lease}),
        )

    def _key(self, record: KeyRecord) -> dict[str, Any]:
        return encode(
            {"pk": tenant_pk(record.tenant_id), "sk": IDEMPOTENCY_PREFIX + record.key_digest}
        )

    def _conditional(self, operation: str, **kwargs: Any) -> bool:
        try:
            getattr(self._client, operation)(TableName=self._table, **kwargs)
        except ClientError as exc:
            if error_code(exc) == CONDITION_FAILED:
                return False
            raise self._idempotency_unavailable(operation, exc) from exc
        except BotoCoreError as exc:
            raise self._idempotency_unavailable(operation, exc) from exc
        return True

    @staticmethod
    def _idempotency_unavailable(
        operation: str, exc: Exception
    ) -> IdempotencyStoreUnavailableError:
        logger.warning(
            "idempotency store call failed",
            extra={"operation": operation, "error": error_code(exc)},
        )
        return IdempotencyStoreUnavailableError(UNAVAILABLE)

    # -- refusal counters --------------------------------------------------------------------

    def count(
        self, tenant_id: str, reason: str, minute: str, *, model_id: str, price_version: str
    ) -> RefusalCount:
        """ADD one; the counter as it is after (ALL_NEW: a handful of attributes)."""
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key=encode({"pk": tenant_pk(tenant_id), "sk": _refused_sk(minute, reason)}),
                UpdateExpression=(
                    "ADD refused :one SET expires_at = if_not_exists(expires_at, :ttl),"
                    " model_id = if_not_exists(model_id, :model),"
                    " price_version = if_not_exists(price_version, :prices)"
                ),
                ExpressionAttributeValues=encode(
                    {
                        ":one": 1,
                        ":ttl": _minute_epoch(minute) + COUNTER_RETENTION_S,
                        ":model": model_id,
                        ":prices": price_version,
                    }
                ),
                ReturnValues="ALL_NEW",
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._counter_unavailable("count", exc) from exc
        return _refusal_count(tenant_id, decode(response.get("Attributes")))

    def closed(self, tenant_id: str, before: str) -> list[RefusalCount]:
        """The tenant's counters of minutes before `before` (one Query, paged)."""
        counts: list[RefusalCount] = []
        start: dict[str, Any] | None = None
        while True:
            extra = {"ExclusiveStartKey": start} if start else {}
            try:
                page = self._client.query(
                    TableName=self._table,
                    KeyConditionExpression="pk = :pk AND sk BETWEEN :low AND :high",
                    ExpressionAttributeValues=encode(
                        {
                            ":pk": tenant_pk(tenant_id),
                            ":low": REFUSED_PREFIX,
                            ":high": REFUSED_PREFIX + before,
                        }
                    ),
                    ConsistentRead=True,
                    **extra,
                )
            except (ClientError, BotoCoreError) as exc:
                raise self._counter_unavailable("closed", exc) from exc
            counts.extend(_refusal_count(tenant_id, decode(item)) for item in page["Items"])
            start = page.get("LastEvaluatedKey")
            if not start:
                return counts

    def freeze(self, count: RefusalCount) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_refused_key(count),
                UpdateExpression="SET flushed = :count",
                ConditionExpression="refused = :count AND attribute_not_exists(flushed)",
                ExpressionAttributeValues=encode({":count": count.refused}),
            )
        except ClientError as exc:
            if error_code(exc) == CONDITION_FAILED:
                return False
            raise self._counter_unavailable("freeze", exc) from exc
        except BotoCoreError as exc:
            raise self._counter_unavailable("freeze", exc) from exc
        return True

    def forget(self, count: RefusalCount) -> None:
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=_refused_key(count),
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._counter_unavailable("forget", exc) from exc

    @staticmethod
    def _counter_unavailable(operation: str, exc: Exception) -> RefusalCounterUnavailableError:
        logger.warning(
            "refusal counter call failed",
            extra={"operation": operation, "error": error_code(exc)},
        )
        return RefusalCounterUnavailableError("refusal counters unavailable")

    # -- API rate windows --------------------------------------------------------------------

    def admit(self, tenant_id: str, scope: str, window: str, limit: int) -> bool:
        """ADD one under `n < limit` (one conditional UpdateItem)."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=encode({"pk": tenant_pk(tenant_id), "sk": f"{RATE_PREFIX}{scope}#{window}"}),
                # Aliased: short attribute names risk DynamoDB's reserved words.
                UpdateExpression="ADD #n :one SET expires_at = if_not_exists(expires_at, :ttl)",
                ConditionExpression="attribute_not_exists(#n) OR #n < :limit",
                ExpressionAttributeNames={"#n": "n"},
                ExpressionAttributeValues=encode(
                    {
                        ":one": 1,
                        ":limit": limit,
                        ":ttl": _minute_epoch(window) + RATE_RETENTION_S,
                    }
                ),
            )
        except ClientError as exc:
            if error_code(exc) == CONDITION_FAILED:
                return False
            logger.warning("rate window write failed", extra={"error": error_code(exc)})
            raise RequestLimiterUnavailableError("rate counter unavailable") from exc
        except BotoCoreError as exc:
            logger.warning("rate window write failed", extra={"error": error_code(exc)})
            raise RequestLimiterUnavailableError("rate counter unavailable") from exc
        return True


def _refused_key(count: RefusalCount) -> dict[str, Any]:
    return encode({"pk": tenant_pk(count.tenant_id), "sk": _refused_sk(count.minute, count.reason)})


def _refused_sk(minute: str, reason: str) -> str:
    return f"{REFUSED_PREFIX}{minute}#{reason}"


def _minute_epoch(minute: str) -> int:
    return int(datetime.strptime(minute, "%Y-%m-%dT%H:%M").replace(tzinfo=UTC).timestamp())


def _refusal_count(tenant_id: str, values: dict[str, Any]) -> RefusalCount:
    _, minute, reason = str(values["sk"]).split("#", 2)
    flushed = values.get("flushed")
    return RefusalCount(
        tenant_id=tenant_id,
        reason=reason,
        minute=minute,
        refused=int(values.get("refused", 0)),
        model_id=str(values.get("model_id", "")),
        price_version=str(values.get("price_version", "")),
        flushed=None if flushed is None else int(flushed),
    )
