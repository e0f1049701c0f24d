"""One run of the budget repair job on the local stack, as the deployed 5-minute schedule would.

The local stack's job loop starts this as a child process after partition maintenance: it
finishes expired reservations (from their usage events, or by releasing them) and resends
budget alerts left pending. It prints a line only when it changed something.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from chalicelib import logs, wiring
from chalicelib.settings import Settings


def main() -> int:
    logs.configure(logging.WARNING)
    report = wiring.run_budget_repair(Settings.from_env(), datetime.now(UTC))
    if any(report.get(key) for key in ("settled_from_events", "released", "alerts_sent", "errors")):
        print(json.dumps({"budget_repair": report}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
