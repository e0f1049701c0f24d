"""The chat path stays light: importing the app pulls in no pandas, pyarrow or awswrangler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "pyarrow", "awswrangler", "numpy", "duckdb", "sqlglot")


def test_importing_app_does_not_import_analytics_libraries() -> None:
    probe = (
        "import json, sys; import app; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_heavy_libraries_are_importable_here_so_the_check_can_fail() -> None:
    # The test above means something only if these would be found when imported.
    probe = "import pandas, pyarrow, awswrangler; print('ok')"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "ok"
