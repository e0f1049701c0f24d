"""Partition maintenance: a UTC day's new raw and fallback events -> a new generation of its
partition, committed exactly once and switched into Glue in one step.

`job(day=..., now=...)` lists the objects that can hold the day's events, takes those the
committed generation does not hold yet (all of them for a full rebuild), has them built into a
new generation folder (chalicelib.analytics.building: parsing, quarantine, the bucketed spill,
the merge with the committed rows, one Parquet file per bucket), and commits: a conditional
write in the curation table that only the run holding the day's lease can make, then the Glue
partition's location is switched to the new folder. Readers see the old generation or the new
one, never a mix; old folders are deleted once a grace period longer than any query has passed.

pandas is not used; pyarrow (and numpy) are imported inside the functions that need them:
this module is imported by app.py (through chalicelib.analytics.maintenance), and the chat
path must not load them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal

from chalicelib.analytics.building import Built, Tally, build_generation
from chalicelib.analytics.catalog import PartitionCatalog
from chalicelib.analytics.dedupe import HASH_NAME
from chalicelib.analytics.parsing import PoisonLine
from chalicelib.analytics.sources import (
    DEFAULT_LATENESS_HOURS,
    EARLY_HOURS,
    SourceManifest,
    SourceObject,
    list_sources,
    read_manifest,
    write_manifest,
)
from chalicelib.analytics.state import (
    CurationStateStore,
    DayState,
    Generation,
    Retired,
)
from chalicelib.errors import MeteringError
from chalicelib.layout import BucketLayout, s3_url, split_s3_url

if TYPE_CHECKING:
    from chalicelib.settings import Settings

logger = logging.getLogger(__name__)

# Bump when the same inputs would now give a different partition: every day is rebuilt once.
JOB_VERSION = 2
# Objects fetched and parsed at once: enough to hide S3's latency and keep two cores busy;
# each holds about 5 MB of JSON and its parsed rows.
READ_CONCURRENCY = 6
# Rows per event-id bucket: one bucket is in memory at a time while it is merged, sorted and
# written (about 300 bytes a row in Arrow, a few copies on the way to Parquet).
ROWS_PER_BUCKET = 400_000
# The lease outlives any pause between two renewals; a crashed run blocks its day this long.
DEFAULT_LEASE_S = 300.0
LEASE_RENEW_S = 60.0
# Retired generation folders stay readable this long: longer than any Athena query (30 min
# by default) or /usage request that may have planned on them.
DEFAULT_RETENTION_S = 2 * 3600.0
LEASE_POLL_S = 1.0

Progress = Callable[[str], None]
Status = Literal["written", "recorded", "unchanged", "empty", "busy"]


class PartitionJobError(MeteringError):
    """The partition cannot be rebuilt safely; nothing was changed."""


_DEFAULT_LAYOUT = BucketLayout()


@dataclass(frozen=True)
class PartitionJobConfig:
    """Where the job reads and writes, how far it looks for late events, and its limits."""

    bucket: str
    raw_prefix: str = _DEFAULT_LAYOUT.raw_prefix
    fallback_prefix: str = _DEFAULT_LAYOUT.fallback_prefix
    curated_prefix: str = _DEFAULT_LAYOUT.curated_prefix
    manifest_prefix: str = _DEFAULT_LAYOUT.manifest_prefix
    quarantine_prefix: str = _DEFAULT_LAYOUT.quarantine_prefix
    database: str = "bedrock_metering_db"
    table: str = "token_usage_logs"
    lateness_hours: int = DEFAULT_LATENESS_HOURS
    early_hours: int = EARLY_HOURS
    read_concurrency: int = READ_CONCURRENCY
    rows_per_bucket: int = ROWS_PER_BUCKET
    lease_s: float = DEFAULT_LEASE_S
    retention_s: float = DEFAULT_RETENTION_S
    spill_dir: str | None = None  # default: the system's temp directory (Lambda's /tmp)
    spill_compression: str | None = None  # "lz4" halves the /tmp a day needs, at some CPU

    @classmethod
    def from_settings(cls, settings: Settings) -> PartitionJobConfig:
        """The stage's bucket, prefixes, Glue names and lateness window."""
        return cls(
            bucket=settings.analytics_bucket,
            raw_prefix=settings.raw_prefix,
            fallback_prefix=settings.fallback_prefix,
            curated_prefix=settings.curated_prefix,
            database=settings.glue_database,
            table=settings.glue_table,
            lateness_hours=settings.partition_lateness_hours,
        )

    @property
    def layout(self) -> BucketLayout:
        """The bucket layout these prefixes make."""
        return BucketLayout(
            raw_prefix=self.raw_prefix,
            fallback_prefix=self.fallback_prefix,
            curated_prefix=self.curated_prefix,
            manifest_prefix=self.manifest_prefix,
            quarantine_prefix=self.quarantine_prefix,
        )

    def holds(self, generation: Generation) -> bool:
        """Whether a committed generation was built the way this job builds one now."""
        return (
            generation.job_version == JOB_VERSION
            and generation.hash_name == HASH_NAME
            and generation.lateness_hours == self.lateness_hours
            and generation.early_hours == self.early_hours
        )


@dataclass(frozen=True)
class PartitionResult:
    """What one run did for one day."""

    day: date
    status: Status
    mode: str  # "full", "incremental" or "" (nothing read)
    input_objects: int
    new_objects: int
    input_bytes: int  # of the objects read
    lines: int
    events: int  # in the partition after the run
    added: int
    duplicates: int
    quarantined: int
    other_days: int  # events in the window stamped on a neighbouring day (that day's job)
    orphaned: dict[str, int]  # events no day's window reaches (re-filed under fallback/)
    missing_objects: int  # objects the generation holds that are no longer listed
    generation: int
    files: int
    spill_bytes: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (the scheduled functions return it; logs carry it)."""
        return {
            "day": self.day.isoformat(),
            "status": self.status,
            "mode": self.mode,
            "input_objects": self.input_objects,
            "new_objects": self.new_objects,
            "input_bytes": self.input_bytes,
            "lines": self.lines,
            "events": self.events,
            "added": self.added,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "other_days": self.other_days,
            "orphaned": dict(self.orphaned),
            "missing_objects": self.missing_objects,
            "generation": self.generation,
            "files": self.files,
            "spill_bytes": self.spill_bytes,
            "seconds": round(self.seconds, 3),
        }


class _Lease:
    """The day's lease while the run holds it: renewed at checkpoints, at most every minute."""

    def __init__(
        self,
        state: CurationStateStore,
        day: date,
        holder: str,
        config: PartitionJobConfig,
        clock: Callable[[], float],
    ) -> None:
        self.state, self.day, self.holder = state, day, holder
        self._config, self._clock = config, clock
        self._renewed = clock()

    def checkpoint(self) -> None:
        if self._clock() - self._renewed >= min(LEASE_RENEW_S, self._config.lease_s / 3):
            self.state.renew(self.day, self.holder, self._clock() + self._config.lease_s)
            self._renewed = self._clock()


def job(
    *,
    day: date,
    now: datetime,
    config: PartitionJobConfig,
    s3: Any,
    catalog: PartitionCatalog,
    state: CurationStateStore,
    force: bool = False,
    allow_shrink: bool = False,
    progress: Progress | None = None,
    wait_s: float = 0.0,
    clock: Callable[[], float] = time.time,
) -> PartitionResult:
    """Bring `day`'s partition up to date with every raw and fallback event of that UTC day.

    Incremental: only objects the committed generation does not hold are read, and merged
    with it. A full rebuild (`force`, a first run, a new job version) reads every object, and
    is refused if it would hold fewer events than the committed generation (raw objects
    deleted?) unless `allow_shrink`. If another run holds the day's lease, this one waits up
    to `wait_s` seconds for it, then reports `busy` and changes nothing.
    """
    if day > now.astimezone(UTC).date():
        raise PartitionJobError(f"{day} is in the future")
    run = _Run(
        day=day,
        now=now,
        config=config,
        s3=s3,
        catalog=catalog,
        state=state,
        say=progress or (lambda message: logger.info(message, extra={"day": day.isoformat()})),
        clock=clock,
    )
    before = state.read(day)
    objects = list_sources(
        s3,
        config.bucket,
        config.layout,
        day,
        lateness_hours=config.lateness_hours,
        early_hours=config.early_hours,
    )
    plan = _plan(s3, config, before, objects, force)
    glue_location = catalog.location(day)
    quiet = plan.nothing_to_do and _in_sync(config, plan.committed, glue_location)
    if quiet and not _due(before.retired, clock(), config.retention_s):
        return run.unchanged(plan, objects)
    held = _acquire(state, day, run.holder, run.pending, config=config, wait_s=wait_s, clock=clock)
    if held is None:
        run.say(f"{day}: another run holds the day; nothing changed")
        return run.result("busy", plan, objects)
    if held.committed != before.committed:  # another run committed while we looked
        plan = _plan(s3, config, held, objects, force)
        glue_location = catalog.location(day)
    return run.under_lease(held, plan, objects, glue_location, allow_shrink=allow_shrink)


@dataclass
class _Run:
    """One run of the job for one day: its identity, clients and clock."""

    day: date
    now: datetime
    config: PartitionJobConfig
    s3: Any
    catalog: PartitionCatalog
    state: CurationStateStore
    say: Progress
    clock: Callable[[], float]
    started: float = field(default_factory=time.monotonic)
    holder: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def name(self) -> str:
        """The run's generation folder name: when it started, then who it is."""
        return f"r{datetime.fromtimestamp(self.clock(), UTC):%Y%m%dT%H%M%S}-{self.holder}"

    def __post_init__(self) -> None:
        name = self.name
        layout = self.config.layout
        self.folder = layout.generation_prefix(self.day, name)
        self.manifest_key = layout.source_manifest_key(self.day, name)
        self.pending = Retired(self.folder, self.manifest_key, since=0.0)

    def under_lease(
        self,
        held: DayState,
        plan: _Plan,
        objects: Sequence[SourceObject],
        glue_location: str | None,
        *,
        allow_shrink: bool,
    ) -> PartitionResult:
        """Everything that needs the lease; the lease is given up whatever happens."""
        retired = list(held.retired)
        if held.pending is not None:  # a run that lost or crashed with the lease left this
            retired.append(replace(held.pending, since=self.clock()))
        committed = False
        try:
            if plan.nothing_to_do:
                if plan.committed is not None and not _in_sync(
                    self.config, plan.committed, glue_location
                ):
                    self.catalog.switch(
                        self.day, s3_url(self.config.bucket, plan.committed.location)
                    )
                glue_now = self.catalog.location(self.day)
                retired = _collect_garbage(self.s3, self.config, retired, glue_now, self.clock)
                self.state.release(self.day, self.holder, tuple(retired))
                return self.unchanged(plan, objects)
            tally = Tally()
            generation, build = self._build_and_commit(
                plan, objects, glue_location, retired, tally, allow_shrink=allow_shrink
            )
            committed = True
            self.state.release(self.day, self.holder, tuple(retired))
        except BaseException:
            if not committed:
                retired.append(replace(self.pending, since=self.clock()))
            try:
                self.state.release(self.day, self.holder, tuple(retired))
            except Exception:  # the original failure is the one to report
                logger.exception("could not release the lease", extra={"day": str(self.day)})
            raise
        status: Status = "written" if build.rewritten else "recorded"
        if generation.events == 0:
            status = "empty"
        result = self.result(status, plan, objects, tally, generation=generation, build=build)
        _report(result, tally.examples)
        self.say(
            f"{self.day}: {status}, generation {generation.number}: {generation.events} events "
            f"(+{build.added}) in {len(generation.files)} file(s), {tally.duplicates} "
            f"duplicates dropped, {tally.quarantined} lines quarantined, {result.seconds:.1f}s"
        )
        return result

    def _build_and_commit(
        self,
        plan: _Plan,
        objects: Sequence[SourceObject],
        glue_location: str | None,
        retired: list[Retired],
        tally: Tally,
        *,
        allow_shrink: bool,
    ) -> tuple[Generation, Built]:
        """Build the new generation, commit it (fenced by the lease), switch Glue to it.

        `retired` is updated in place with what the commit retires, so a failure after the
        commit releases the lease with the committed list."""
        day, config, clock = self.day, self.config, self.clock
        lease = _Lease(self.state, day, self.holder, config, clock)
        self.say(
            f"{day}: {plan.mode} from {len(plan.new)} of {len(objects)} objects "
            f"({sum(o.size for o in plan.new) / 1e6:.1f} MB)"
        )
        build = build_generation(
            self.s3,
            config,
            day,
            full=plan.full,
            base=plan.base,
            new=plan.new,
            objects=objects,
            folder=self.folder,
            tally=tally,
            lease=lease,
            say=self.say,
        )
        if plan.full and not allow_shrink and build.events < plan.events_before:
            raise PartitionJobError(
                f"{day}: the inputs now hold {build.events} events but the partition holds "
                f"{plan.events_before}; raw objects may have been deleted. Nothing was changed "
                "(rerun with allow_shrink to accept the smaller partition)."
            )
        held = plan.manifest if plan.manifest is not None and not plan.full else None
        manifest = held or SourceManifest(day.isoformat(), ())
        write_manifest(self.s3, config.bucket, self.manifest_key, manifest.with_objects(plan.new))
        lease.checkpoint()

        now = clock()
        if build.rewritten:
            location, files = self.folder, build.files
            if plan.committed is not None:
                retired.append(Retired(plan.committed.location, plan.committed.manifest_key, now))
        else:  # nothing of this day was added: the files stay where they are
            assert plan.base is not None
            location, files = plan.base.location, plan.base.files
            retired.append(Retired("", plan.base.manifest_key, now))
        committed_location = plan.committed.location if plan.committed else ""
        if glue_location and _key_of(config, glue_location) not in (location, committed_location):
            # A partition an older job left (awswrangler's Hive folder): retire it too.
            retired.append(Retired(_key_of(config, glue_location), "", now))
        base_number = plan.committed.number if plan.committed else 0
        generation = Generation(
            number=base_number + 1,
            location=location,
            files=tuple(files),
            buckets=build.buckets,
            events=build.events,
            manifest_key=self.manifest_key,
            job_version=JOB_VERSION,
            early_hours=config.early_hours,
            lateness_hours=config.lateness_hours,
            hash_name=HASH_NAME,
            committed_at=self.now.astimezone(UTC).isoformat(),
        )
        retired[:] = _collect_garbage(self.s3, config, retired, glue_location, clock)
        self.state.commit(day, self.holder, base_number, generation, tuple(retired))
        if generation.files or glue_location is not None:
            self.catalog.switch(day, s3_url(config.bucket, generation.location))
        return generation, build

    def unchanged(self, plan: _Plan, objects: Sequence[SourceObject]) -> PartitionResult:
        self.say(
            f"{self.day}: unchanged ({len(objects)} input objects, {plan.events_before} events)"
        )
        return self.result("unchanged", plan, objects)

    def result(
        self,
        status: Status,
        plan: _Plan,
        objects: Sequence[SourceObject],
        tally: Tally | None = None,
        *,
        generation: Generation | None = None,
        build: Built | None = None,
    ) -> PartitionResult:
        tally = tally or Tally()
        read = status not in ("unchanged", "busy")
        shown = generation or plan.committed
        return PartitionResult(
            day=self.day,
            status=status,
            mode=plan.mode if read else "",
            input_objects=len(objects),
            new_objects=len(plan.new) if read else 0,
            input_bytes=sum(obj.size for obj in plan.new) if read else 0,
            lines=tally.lines,
            events=shown.events if shown else 0,
            added=build.added if build else 0,
            duplicates=tally.duplicates,
            quarantined=tally.quarantined,
            other_days=tally.other_days,
            orphaned=dict(tally.orphaned),
            missing_objects=plan.missing,
            generation=shown.number if shown else 0,
            files=len(shown.files) if shown else 0,
            spill_bytes=build.spill_bytes if build else 0,
            seconds=time.monotonic() - self.started,
        )


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Plan:
    committed: Generation | None  # what is committed now, whatever job built it
    base: Generation | None  # the committed generation this run builds on (None: full)
    manifest: SourceManifest | None
    full: bool
    new: tuple[SourceObject, ...]
    events_before: int
    missing: int

    @property
    def mode(self) -> str:
        return "full" if self.full else "incremental"

    @property
    def nothing_to_do(self) -> bool:
        return not self.full and not self.new


def _plan(
    s3: Any,
    config: PartitionJobConfig,
    day_state: DayState,
    objects: Sequence[SourceObject],
    force: bool,
) -> _Plan:
    committed = day_state.committed
    events_before = committed.events if committed else 0
    base = committed if committed is not None and config.holds(committed) else None
    manifest = None
    if base is not None and not force:
        manifest = read_manifest(s3, config.bucket, base.manifest_key)
    if base is None or manifest is None or force:
        return _Plan(committed, None, None, True, tuple(objects), events_before, 0)
    held = manifest.identities()
    new = tuple(obj for obj in objects if obj.identity not in held)
    listed = {obj.key for obj in objects}
    missing = len(manifest.keys() - listed)
    return _Plan(committed, base, manifest, False, new, events_before, missing)


def _in_sync(
    config: PartitionJobConfig, base: Generation | None, glue_location: str | None
) -> bool:
    """Whether Glue points where the committed generation says (a commit whose switch was
    interrupted is finished by the next run)."""
    if base is None:
        return True
    if not base.files and glue_location is None:
        return True
    return glue_location == s3_url(config.bucket, base.location)


def _due(retired: Sequence[Retired], now: float, retention_s: float) -> bool:
    return any(item.since + retention_s <= now for item in retired)


def _acquire(
    state: CurationStateStore,
    day: date,
    holder: str,
    pending: Retired,
    *,
    config: PartitionJobConfig,
    wait_s: float,
    clock: Callable[[], float],
) -> DayState | None:
    deadline = clock() + wait_s
    while True:
        now = clock()
        held = state.acquire(day, holder, now=now, until=now + config.lease_s, pending=pending)
        if held is not None or now >= deadline:
            return held
        time.sleep(min(LEASE_POLL_S, max(0.05, deadline - now)))


def _key_of(config: PartitionJobConfig, url: str) -> str:
    bucket, key = split_s3_url(url)
    return key if bucket == config.bucket else url


# --------------------------------------------------------------------------- garbage


def _collect_garbage(
    s3: Any,
    config: PartitionJobConfig,
    retired: Sequence[Retired],
    glue_location: str | None,
    clock: Callable[[], float],
) -> list[Retired]:
    """Delete the retired folders whose grace period is over; return those still waiting.

    Only objects directly in a folder are deleted (a folder of an older job can be the parent
    of other folders), and never the folder Glue points at.
    """
    keep: list[Retired] = []
    current = _key_of(config, glue_location) if glue_location else None
    for item in retired:
        if item.since + config.retention_s > clock() or item.location == current:
            keep.append(item)
            continue
        if item.location:
            _delete_folder(s3, config.bucket, item.location)
        if item.manifest_key:
            s3.delete_object(Bucket=config.bucket, Key=item.manifest_key)
    return keep


def _delete_folder(s3: Any, bucket: str, folder: str) -> None:
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=folder, Delimiter="/"):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


# --------------------------------------------------------------------------- reporting


def _report(result: PartitionResult, poison: Sequence[PoisonLine]) -> None:
    logger.info("usage partition maintained", extra={"partition": result.summary()})
    if poison:
        logger.error(
            "usage lines that are not valid events were quarantined",
            extra={
                "day": result.day.isoformat(),
                "quarantined": result.quarantined,
                "examples": [f"{line.key}:{line.line}: {line.reason}" for line in poison],
            },
        )
    if result.orphaned:
        logger.error(
            "events found outside their day's window were re-filed under fallback/ for their "
            "own day's next run (the sweep, or meterctl backfill for older days)",
            extra={"day": result.day.isoformat(), "orphaned": dict(result.orphaned)},
        )
    if result.missing_objects:
        logger.warning(
            "source objects the partition was built from are no longer listed; the partition "
            "keeps their events (a full rebuild would refuse to shrink)",
            extra={"day": result.day.isoformat(), "missing_objects": result.missing_objects},
        )
