"""`python -m deploy ...`: see deploy/cli.py."""

from __future__ import annotations

import sys

from deploy.cli import main

sys.exit(main())
