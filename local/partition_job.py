"""One run of the partition-maintenance job on the local stack (today and yesterday, UTC).

The local stack's job loop starts this as a child process every `--job-interval` seconds,
as EventBridge would start the deployed schedule's Lambda: its own process, environment and
clients, so nothing it does (or imports) touches the stack's process. A day whose input
objects have not changed since its last run is skipped before pandas is even imported.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from chalicelib import logs, wiring
from chalicelib.settings import Settings

# Yesterday too: events of the last minutes before midnight arrive in today's first hours.
DAYS_BACK = (0, 1)


def main() -> int:
    logs.configure()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    summary = wiring.run_partition_maintenance(Settings.from_env(), datetime.now(UTC), DAYS_BACK)
    changed = [p for p in summary["partitions"] if p["status"] != "unchanged"]
    if changed:
        print(json.dumps({"partitions": changed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
