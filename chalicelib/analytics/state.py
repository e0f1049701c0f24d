"""Each curated day's committed generation and its lease, in DynamoDB (conditional writes).

One item per day holds both: which generation of the day's partition is committed (its
folder, files, event count and source manifest), the folders retired and waiting for their
grace period to end, and the lease of the run working on the day. A run takes the lease
before it writes anything and commits with a write that only the lease holder can make, so
of any number of overlapping runs exactly one commits each generation; a run that crashed
leaves a lease that expires on its own.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Protocol

from chalicelib.aws_errors import CONDITION_FAILED, error_code
from chalicelib.errors import MeteringError

STATE_SORT_KEY = "state"


class LeaseLostError(MeteringError):
    """The run no longer holds its day's lease (it expired and another run took it)."""


@dataclass(frozen=True)
class Generation:
    """A committed state of a day's partition."""

    number: int
    location: str  # key prefix of the generation's folder
    files: tuple[str, ...]  # keys of its Parquet files, one per event-id bucket with rows
    buckets: int
    events: int
    manifest_key: str  # the source objects it holds every event of
    job_version: int
    early_hours: int
    lateness_hours: int
    hash_name: str
    committed_at: str


@dataclass(frozen=True)
class Retired:
    """A folder (and its manifest) no longer current, deleted once `since` + grace has passed."""

    location: str
    manifest_key: str
    since: float


@dataclass(frozen=True)
class DayState:
    """What the table says about one day."""

    committed: Generation | None = None
    retired: tuple[Retired, ...] = ()
    lease_holder: str | None = None
    lease_until: float = 0.0
    # Where the last lease holder was writing; if it never committed, this is debris.
    pending: Retired | None = None


class CurationStateStore(Protocol):
    """The day states (DynamoCurationStateStore; InMemoryCurationStateStore in tests)."""

    def read(self, day: date) -> DayState: ...

    def acquire(
        self, day: date, holder: str, now: float, until: float, pending: Retired
    ) -> DayState | None:
        """Take the day's lease if it is free or expired: the state as it was, else None."""
        ...

    def renew(self, day: date, holder: str, until: float) -> None:
        """Extend the lease; LeaseLostError if `holder` no longer has it."""
        ...

    def commit(
        self,
        day: date,
        holder: str,
        base: int,
        generation: Generation,
        retired: tuple[Retired, ...],
    ) -> None:
        """Make `generation` current if `holder` has the lease and generation `base` is still
        current; LeaseLostError otherwise. The lease is kept (see `release`)."""
        ...

    def release(self, day: date, holder: str, retired: tuple[Retired, ...]) -> None:
        """Give the lease up, recording the folders now retired; a lost lease is not an error."""
        ...


def day_key(day: date) -> str:
    return f"usage-day#{day.isoformat()}"


# --------------------------------------------------------------------------- DynamoDB


class DynamoCurationStateStore:
    """The day states in the curation table (pk/sk strings), through one DynamoDB client."""

    def __init__(self, table: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self._client = client
        self._table = table

    def _key(self, day: date) -> dict[str, Any]:
        return {"pk": {"S": day_key(day)}, "sk": {"S": STATE_SORT_KEY}}

    def read(self, day: date) -> DayState:
        item = self._client.get_item(TableName=self._table, Key=self._key(day), ConsistentRead=True)
        return _state_from_item(item.get("Item", {}))

    def acquire(
        self, day: date, holder: str, now: float, until: float, pending: Retired
    ) -> DayState | None:
        from botocore.exceptions import ClientError

        try:
            response = self._client.update_item(
                TableName=self._table,
                Key=self._key(day),
                UpdateExpression="SET #holder = :holder, #until = :until, #pending = :pending",
                ConditionExpression="attribute_not_exists(#holder) OR #until < :now",
                ExpressionAttributeNames={
                    "#holder": "lease_holder",
                    "#until": "lease_until",
                    "#pending": "lease_pending",
                },
                ExpressionAttributeValues={
                    ":holder": {"S": holder},
                    ":until": {"N": _number(until)},
                    ":now": {"N": _number(now)},
                    ":pending": _retired_value(pending),
                },
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) == CONDITION_FAILED:
                return None
            raise
        return _state_from_item(response.get("Attributes", {}))

    def renew(self, day: date, holder: str, until: float) -> None:
        self._holder_update(
            day,
            holder,
            "SET #until = :until",
            {"#until": "lease_until"},
            {":until": {"N": _number(until)}},
        )

    def commit(
        self,
        day: date,
        holder: str,
        base: int,
        generation: Generation,
        retired: tuple[Retired, ...],
    ) -> None:
        names = {"#gen": "generation", "#retired": "retired", "#pending": "lease_pending"}
        values = {
            ":gen": {"M": _generation_value(generation)},
            ":retired": {"L": [_retired_value(r) for r in retired]},
            ":base": {"N": str(base)},
        }
        self._holder_update(
            day,
            holder,
            "SET #gen = :gen, #retired = :retired REMOVE #pending",
            names,
            values,
            extra_condition="(attribute_not_exists(#gen) OR #gen.#number = :base)",
            extra_names={"#number": "number"},
        )

    def release(self, day: date, holder: str, retired: tuple[Retired, ...]) -> None:
        # Someone else holds it now when this fails: what we leave is theirs to retire.
        with contextlib.suppress(LeaseLostError):
            self._holder_update(
                day,
                holder,
                "SET #retired = :retired REMOVE #until, #pending, #holder",
                {"#retired": "retired", "#until": "lease_until", "#pending": "lease_pending"},
                {":retired": {"L": [_retired_value(r) for r in retired]}},
            )

    def _holder_update(
        self,
        day: date,
        holder: str,
        expression: str,
        names: dict[str, str],
        values: dict[str, Any],
        *,
        extra_condition: str = "",
        extra_names: dict[str, str] | None = None,
    ) -> None:
        from botocore.exceptions import ClientError

        condition = "#holder = :holder"
        if extra_condition:
            condition += f" AND {extra_condition}"
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._key(day),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames={
                    "#holder": "lease_holder",
                    **names,
                    **(extra_names or {}),
                },
                ExpressionAttributeValues={":holder": {"S": holder}, **values},
            )
        except ClientError as exc:
            if error_code(exc) == CONDITION_FAILED:
                raise LeaseLostError(f"the lease of {day} is no longer {holder}'s") from exc
            raise


def _number(value: float) -> str:
    return f"{value:.3f}"


def _retired_value(retired: Retired) -> dict[str, Any]:
    return {
        "M": {
            "location": {"S": retired.location},
            "manifest_key": {"S": retired.manifest_key},
            "since": {"N": _number(retired.since)},
        }
    }


def _generation_value(generation: Generation) -> dict[str, Any]:
    return {
        "number": {"N": str(generation.number)},
        "location": {"S": generation.location},
        "files": {"L": [{"S": key} for key in generation.files]},
        "buckets": {"N": str(generation.buckets)},
        "events": {"N": str(generation.events)},
        "manifest_key": {"S": generation.manifest_key},
        "job_version": {"N": str(generation.job_version)},
        "early_hours": {"N": str(generation.early_hours)},
        "lateness_hours": {"N": str(generation.lateness_hours)},
        "hash_name": {"S": generation.hash_name},
        "committed_at": {"S": generation.committed_at},
    }


def _retired_from(value: dict[str, Any]) -> Retired:
    fields = value["M"]
    return Retired(
        location=fields["location"]["S"],
        manifest_key=fields["manifest_key"]["S"],
        since=float(fields["since"]["N"]),
    )


def _state_from_item(item: dict[str, Any]) -> DayState:
    committed = None
    if "generation" in item:
        g = item["generation"]["M"]
        committed = Generation(
            number=int(g["number"]["N"]),
            location=g["location"]["S"],
            files=tuple(entry["S"] for entry in g["files"]["L"]),
            buckets=int(g["buckets"]["N"]),
            events=int(g["events"]["N"]),
            manifest_key=g["manifest_key"]["S"],
            job_version=int(g["job_version"]["N"]),
            early_hours=int(g["early_hours"]["N"]),
            lateness_hours=int(g["lateness_hours"]["N"]),
            hash_name=g["hash_name"]["S"],
            committed_at=g["committed_at"]["S"],
        )
    return DayState(
        committed=committed,
        retired=tuple(_retired_from(v) for v in item.get("retired", {}).get("L", [])),
        lease_holder=item.get("lease_holder", {}).get("S"),
        lease_until=float(item.get("lease_until", {}).get("N", "0")),
        pending=_retired_from(item["lease_pending"]) if "lease_pending" in item else None,
    )


# --------------------------------------------------------------------------- in memory


@dataclass
class InMemoryCurationStateStore:
    """The same rules over a dict, for unit tests."""

    states: dict[date, DayState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, day: date) -> DayState:
        with self._lock:
            return self.states.get(day, DayState())

    def acquire(
        self, day: date, holder: str, now: float, until: float, pending: Retired
    ) -> DayState | None:
        with self._lock:
            old = self.states.get(day, DayState())
            if old.lease_holder is not None and old.lease_until >= now:
                return None
            self.states[day] = replace(old, lease_holder=holder, lease_until=until, pending=pending)
            return old

    def renew(self, day: date, holder: str, until: float) -> None:
        with self._lock:
            state = self._held(day, holder)
            self.states[day] = replace(state, lease_until=until)

    def commit(
        self,
        day: date,
        holder: str,
        base: int,
        generation: Generation,
        retired: tuple[Retired, ...],
    ) -> None:
        with self._lock:
            state = self._held(day, holder)
            current = state.committed.number if state.committed else None
            if current is not None and current != base:
                raise LeaseLostError(f"generation {current} of {day} is not {base}")
            self.states[day] = replace(state, committed=generation, retired=retired, pending=None)

    def release(self, day: date, holder: str, retired: tuple[Retired, ...]) -> None:
        with self._lock:
            try:
                state = self._held(day, holder)
            except LeaseLostError:
                return
            self.states[day] = replace(
                state, retired=retired, lease_holder=None, lease_until=0.0, pending=None
            )

    def _held(self, day: date, holder: str) -> DayState:
        state = self.states.get(day, DayState())
        if state.lease_holder != holder:
            raise LeaseLostError(f"the lease of {day} is no longer {holder}'s")
        return state
