"""What the live call metrics cost per call: bytes of log, CPU time, and the import."""

from __future__ import annotations

import io
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

from chalicelib.metrics import EmfCallMetrics
from chalicelib.usage import TokenUsage, UsageEvent, new_event_id

CALLS = 20_000
ROUNDS = 5


def sample_event() -> UsageEvent:
    """A typical call: uuid ids, a real model id, a cost with eight decimals."""
    return UsageEvent(
        event_id=new_event_id(),
        timestamp=datetime.now(UTC),
        tenant_id="tenant-0007",
        user_id=new_event_id(),
        model_id="anthropic.claude-3-haiku-20240307-v1:0",
        tokens=TokenUsage(input_tokens=37, output_tokens=64, total_tokens=101),
        status="ok",
        error_code=None,
        latency_ms=934,
        cost_usd="0.00008925",
        price_version="2026-11-27",
        request_id=new_event_id(),
        stage="prod",
    )


class Discard(io.TextIOBase):
    """A stream that counts bytes and keeps nothing (stdout's cost is Lambda's, not ours)."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)


def import_ms() -> float:
    """Extra import time of chalicelib.metrics (Powertools) on top of the chat path's other
    modules (a cold start pays it once)."""
    probe = (
        "import time, chalice.app, chalicelib.chat, chalicelib.recorder, chalicelib.bedrock, "
        "chalicelib.budgets.dynamo, chalicelib.identity; t = time.perf_counter(); "
        "import chalicelib.metrics; print((time.perf_counter() - t) * 1000)"
    )
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", probe], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(5)
    ]
    return statistics.median(runs)


def main() -> None:
    event = sample_event()
    stream = Discard()
    metrics = EmfCallMetrics(stream=stream)
    metrics.observe(event)
    line_bytes = stream.bytes
    per_call_us = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(CALLS):
            metrics.observe(event)
        per_call_us.append((time.process_time() - started) / CALLS * 1e6)
    print(f"EMF line per call: {line_bytes} bytes")
    median = statistics.median(per_call_us)
    print(
        f"CPU per call (build, validate, serialize, write): median {median:.0f} us over "
        f"{ROUNDS} x {CALLS} calls (min {min(per_call_us):.0f}, max {max(per_call_us):.0f})"
    )
    print(f"extra import after the chat path's modules: {import_ms():.1f} ms (median of 5)")


if __name__ == "__main__":
    main()
