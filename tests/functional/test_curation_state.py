"""The curation state's rules, the same on DynamoDB (moto) and in memory: one lease holder at a
time, expiry, a commit only its holder can make, and only on the generation it started from."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import boto3
import pytest

from chalicelib.analytics.state import (
    CurationStateStore,
    DynamoCurationStateStore,
    Generation,
    InMemoryCurationStateStore,
    LeaseLostError,
    Retired,
)
from tests.support.lake import CURATION_TABLE, REGION, create_catalog

DAY = date(2025, 12, 7)
PENDING = Retired("usage/gen/x/", "manifests/x.json.gz", 0.0)


def generation(number: int, events: int = 1) -> Generation:
    return Generation(
        number=number,
        location=f"usage/gen/g{number}/",
        files=(f"usage/gen/g{number}/part-0000.snappy.parquet",),
        buckets=1,
        events=events,
        manifest_key=f"manifests/g{number}.json.gz",
        job_version=2,
        early_hours=1,
        lateness_hours=2,
        hash_name="poly64-fmix",
        committed_at="2025-12-08T00:00:00+00:00",
    )


@pytest.fixture(params=["dynamodb", "memory"])
def store(request: pytest.FixtureRequest, aws: None) -> Iterator[CurationStateStore]:
    if request.param == "memory":
        yield InMemoryCurationStateStore()
        return
    create_catalog("state-test-bucket")
    yield DynamoCurationStateStore(CURATION_TABLE, client=boto3.client("dynamodb", REGION))


def test_one_holder_at_a_time_until_the_lease_expires(store: CurationStateStore) -> None:
    assert store.acquire(DAY, "a", now=100, until=400, pending=PENDING) is not None
    assert store.acquire(DAY, "b", now=200, until=500, pending=PENDING) is None
    taken = store.acquire(DAY, "b", now=401, until=700, pending=PENDING)
    assert taken is not None
    assert (taken.lease_holder, taken.pending) == ("a", PENDING)  # what "a" left behind
    assert store.read(DAY).lease_holder == "b"


def test_only_the_holder_commits_and_only_on_the_generation_it_read(
    store: CurationStateStore,
) -> None:
    store.acquire(DAY, "a", now=0, until=100, pending=PENDING)
    store.commit(DAY, "a", 0, generation(1), ())
    store.release(DAY, "a", (Retired("old/", "", 5.0),))
    state = store.read(DAY)
    assert (state.committed, state.lease_holder) == (generation(1), None)
    assert state.retired == (Retired("old/", "", 5.0),)

    store.acquire(DAY, "b", now=10, until=20, pending=PENDING)
    store.acquire(DAY, "c", now=30, until=90, pending=PENDING)  # b's lease expired
    with pytest.raises(LeaseLostError):
        store.commit(DAY, "b", 1, generation(2), ())  # fenced: b lost the lease
    with pytest.raises(LeaseLostError):
        store.renew(DAY, "b", 100)
    with pytest.raises(LeaseLostError):
        store.commit(DAY, "c", 0, generation(2), ())  # built on a generation not current
    store.commit(DAY, "c", 1, generation(2, events=5), ())
    store.release(DAY, "b", ())  # a lost lease is not an error, and changes nothing
    assert store.read(DAY).committed == generation(2, events=5)
    assert store.read(DAY).lease_holder == "c"
