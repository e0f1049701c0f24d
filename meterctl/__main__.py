"""Entry point: `python -m meterctl ...`."""

from __future__ import annotations

import sys

from meterctl.cli import main

sys.exit(main())
