"""Benchmark: how long after a chat call its usage shows in GET /usage on the local stack.

Run: `python -m bench.usage_freshness` (part of `make bench`). Starts a private local stack
per job interval (BENCH_JOB_INTERVALS, default "30,5": `make run`'s default and a short one),
with the Bedrock stand-in's engine BENCH_ENGINE (default "echo": the model's speed is not what
is measured), makes BENCH_CALLS chat calls one after another, and times each from its 200 to
the first GET /usage whose request count includes it (polled every 0.25 s).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

INTERVALS = tuple(float(n) for n in os.environ.get("BENCH_JOB_INTERVALS", "30,5").split(","))
ENGINE = os.environ.get("BENCH_ENGINE", "echo")
CALLS = int(os.environ.get("BENCH_CALLS", "4"))
POLL_S = 0.25
GIVE_UP_S = 300.0


def measure(interval: float) -> list[float]:
    from local.running import running_stack

    waits: list[float] = []
    with (
        tempfile.TemporaryDirectory() as state,
        running_stack(Path(state), engine=ENGINE, job_interval_s=interval) as stack,
    ):
        run = uuid.uuid4().hex[:8]
        token = stack.create_user(f"fresh-{run}", f"fresh-{run}")
        for number in range(1, CALLS + 1):
            status, body, _ = stack.request(
                "POST", "/bedrock/chat", token, {"prompt": "Say hi.", "max_tokens": 8}
            )
            if status != 200:
                raise RuntimeError(f"chat failed: {status} {body}")
            answered = time.monotonic()
            while time.monotonic() - answered < GIVE_UP_S:
                _, report, _ = stack.request("GET", "/usage", token)
                if report["totals"]["requests"] >= number:
                    break
                time.sleep(POLL_S)
            waits.append(time.monotonic() - answered)
    return waits


def main() -> None:
    print(f"chat -> GET /usage on the local stack ({CALLS} calls, engine {ENGINE})")
    print(f"{'job interval s':>14} {'median s':>9} {'max s':>7}  each")
    for interval in INTERVALS:
        waits = measure(interval)
        shown = " ".join(f"{w:.1f}" for w in waits)
        print(f"{interval:>14.0f} {statistics.median(waits):>9.1f} {max(waits):>7.1f}  {shown}")
    print(
        "  (each call is made as soon as the previous one showed, i.e. just after a job run:\n"
        "   the worst case, one interval plus the run itself, two Python processes)"
    )


if __name__ == "__main__":
    main()
