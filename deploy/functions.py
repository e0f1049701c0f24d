"""The deployed Lambda functions: what each one is, and the limits every deployment checks.

Memory, timeout and reserved concurrency live in `.chalice/config.json` (top-level
`lambda_functions`, so every stage and `chalice deploy` get them); what a function may do on
AWS lives in deploy/iam.py. A function Chalice builds that is not listed here stops packaging:
a new schedule needs its role, layer and alarm decided, not inherited by accident.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from deploy.errors import DeployError
from deploy.naming import API_FUNCTION

CHALICE_CONFIG: Final = Path(__file__).resolve().parent.parent / ".chalice" / "config.json"
# A fresh account's default per-function memory quota (the error names `MemorySize`).
MAX_MEMORY_MB: Final = 3008
# API Gateway's REST integration timeout is 29 s; the function gets one second more so that a
# request the gateway gave up on is still finished (and its usage recorded) by the app.
MAX_API_TIMEOUT_S: Final = 30
MAX_JOB_TIMEOUT_S: Final = 900
PARTITION_JOB_SPILL_MB: Final = 4096

Kind = Literal["api", "partition-job", "repair-job"]


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function of the app."""

    name: str  # Chalice's function name (the handler's name in app.py)
    kind: Kind  # decides its IAM grants (deploy/iam.py)
    pandas_layer: bool  # imports pyarrow or awswrangler (lazily) on some path
    description: str
    # Lambda's /tmp in MB (512 unless the code spills to disk).
    ephemeral_storage_mb: int = 512

    @property
    def is_job(self) -> bool:
        """Scheduled: alarmed on any error, and never run twice at once."""
        return self.kind != "api"


FUNCTIONS: Final[dict[str, FunctionSpec]] = {
    spec.name: spec
    for spec in (
        FunctionSpec(API_FUNCTION, "api", True, "the REST API (GET /usage reads Athena)"),
        # The partition job spills each day's events to /tmp by event id bucket: about 320
        # bytes per event, so 4 GB holds a day of ~10M events (docs/analytics.md).
        FunctionSpec(
            "maintain_usage_today",
            "partition-job",
            True,
            "today's partition, every 2 minutes",
            PARTITION_JOB_SPILL_MB,
        ),
        FunctionSpec(
            "maintain_usage_yesterday",
            "partition-job",
            True,
            "yesterday's partition, 03:10",
            PARTITION_JOB_SPILL_MB,
        ),
        FunctionSpec(
            "sweep_late_usage",
            "partition-job",
            True,
            "older days with late objects",
            PARTITION_JOB_SPILL_MB,
        ),
        # pyarrow (from the layer) reads the curated row groups that hold expired
        # reservations' events.
        FunctionSpec("repair_budget_counters", "repair-job", True, "budget repair, 5 minutes"),
    )
}


@dataclass(frozen=True)
class Sizing:
    """Memory, timeout and reserved concurrency of one function, from .chalice/config.json."""

    memory_mb: int
    timeout_s: int
    reserved_concurrency: int | None


def sizing(config: dict[str, Any] | None = None) -> dict[str, Sizing]:
    """Every function's sizing; DeployError if one is missing or does not fit a fresh account."""
    document = config if config is not None else json.loads(CHALICE_CONFIG.read_text("utf-8"))
    declared: dict[str, Any] = document.get("lambda_functions", {})
    result: dict[str, Sizing] = {}
    for name, spec in FUNCTIONS.items():
        entry = declared.get(name, {})
        memory, timeout = entry.get("lambda_memory_size"), entry.get("lambda_timeout")
        if not isinstance(memory, int) or not isinstance(timeout, int):
            raise DeployError(
                f".chalice/config.json: lambda_functions.{name} needs an explicit "
                "lambda_memory_size and lambda_timeout."
            )
        if memory > MAX_MEMORY_MB:
            raise DeployError(
                f"{name}: {memory} MB is above the {MAX_MEMORY_MB} MB a fresh account allows "
                "per function."
            )
        limit = MAX_JOB_TIMEOUT_S if spec.is_job else MAX_API_TIMEOUT_S
        if not 1 <= timeout <= limit:
            raise DeployError(f"{name}: lambda_timeout must be 1-{limit} s, not {timeout}.")
        reserved = entry.get("reserved_concurrency")
        if spec.is_job and reserved != 1:
            raise DeployError(f"{name}: a job must not overlap itself (reserved_concurrency 1).")
        result[name] = Sizing(memory, timeout, reserved)
    return result


def check_functions(chalice_names: set[str]) -> None:
    """Chalice builds exactly the functions listed here; DeployError naming any difference."""
    unknown = sorted(chalice_names - set(FUNCTIONS))
    if unknown:
        raise DeployError(
            f"app.py defines function(s) {unknown} that deploy/functions.py does not describe: "
            "add each with its kind (IAM), layer and sizing in .chalice/config.json."
        )
    gone = sorted(set(FUNCTIONS) - chalice_names)
    if gone:
        raise DeployError(f"deploy/functions.py describes {gone}, which app.py no longer defines.")
