"""Scheduled partition maintenance: which days each schedule rebuilds, each day on its own."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.analytics.catalog import PartitionCatalog
from chalicelib.analytics.partitions import (
    PartitionJobConfig,
    PartitionJobError,
    Progress,
    job,
)
from chalicelib.analytics.state import CurationStateStore
from chalicelib.settings import Settings

logger = logging.getLogger(__name__)

TODAY: tuple[int, ...] = (0,)
YESTERDAY: tuple[int, ...] = (1,)


def fresh_days(settings: Settings, now: datetime) -> tuple[int, ...]:
    """What the frequent schedule curates: today, and yesterday while its lateness window is
    still open (its last events are still arriving in today's first hours)."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    open_until = midnight + timedelta(hours=settings.partition_lateness_hours + 1)
    return (0, 1) if now.astimezone(UTC) < open_until else TODAY


def sweep_days(settings: Settings) -> tuple[int, ...]:
    """The older days the daily sweep rechecks (2 days ago and back): late objects land there."""
    return tuple(range(2, 2 + settings.partition_sweep_days))


def schedule_time(event: Any) -> datetime:
    """When a schedule fired (its event's `time`), so a delayed start still picks its day."""
    text = getattr(event, "time", None)
    if text is None and isinstance(event, dict):
        text = event.get("time")
    if isinstance(text, str) and text:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment.astimezone(UTC)
    return datetime.now(UTC)


def run(
    config: PartitionJobConfig,
    now: datetime,
    days_back: Iterable[int],
    *,
    s3: Any,
    catalog: PartitionCatalog,
    state: CurationStateStore,
    force: bool = False,
    allow_shrink: bool = False,
    progress: Progress | None = None,
    keep_going: bool = True,
    wait_s: float = 0.0,
) -> dict[str, Any]:
    """Bring the partitions of the given days (counted back from `now`'s UTC date) up to date.

    Each day is independent: one that fails does not stop the others, and the run raises at
    the end so the invocation is marked failed (and retried by Lambda) if any did. Without
    `keep_going`, the first failure is raised as it is (an operator's backfill). `progress`
    hears which day of how many starts, then the job's own steps. A day whose lease another
    run holds is waited for up to `wait_s` seconds, then reported `busy` (not a failure: the
    holder, or the next run, curates what this one would have).
    """
    today = now.astimezone(UTC).date()
    days = [today - timedelta(days=offset) for offset in days_back]
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    for number, day in enumerate(days, start=1):
        if progress is not None:
            progress(f"day {number}/{len(days)}: {day}")
        try:
            result = job(
                day=day,
                now=now,
                config=config,
                s3=s3,
                catalog=catalog,
                state=state,
                force=force,
                allow_shrink=allow_shrink,
                progress=progress,
                wait_s=wait_s,
            )
        except Exception:
            if not keep_going:
                raise
            # Logged here with its day; the others still run, and the run fails below.
            logger.exception("usage partition maintenance failed", extra={"day": str(day)})
            failed.append(day.isoformat())
            continue
        results.append(result.summary())
    if failed:
        raise PartitionJobError(f"partition maintenance failed for {', '.join(failed)}")
    return {"partitions": results}
