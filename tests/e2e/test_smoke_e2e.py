"""`make smoke STAGE=local` against the local stack: the reference CLI flow passes and cleans
up (OUTPUTS points it at this test's private stack instead of `make run`'s)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import RunningStack

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_runs_the_cli_flow_and_deletes_its_user(local_stack: RunningStack) -> None:
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "smoke",
            "STAGE=local",
            f"OUTPUTS={local_stack.outputs_file}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "Smoke test passed."
    for step in (
        "1. created user",
        "2. logged in",
        "3. chat answered",
        "4. usage event in",
        "5. GET /usage answered",
        "cleaned up",
    ):
        assert any(step in line for line in lines), step
    users = local_stack.client("cognito-idp").list_users(
        UserPoolId=local_stack.outputs["UserPoolId"]
    )["Users"]
    assert not [u for u in users if u["Username"].startswith("smoke-")]


def test_smoke_of_a_stage_never_deployed_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy", "smoke", "--outputs", str(tmp_path / "none.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "deploy the stage first" in result.stderr
