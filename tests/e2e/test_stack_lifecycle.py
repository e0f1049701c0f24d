"""`python -m local.stack` as `make run` starts it: one ready line, and Ctrl-C stops everything."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local.running import free_port
from local.stack import ROOT, port_in_use

pytestmark = pytest.mark.e2e


def test_ready_line_outputs_and_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    ports = {"--aws-port": free_port(), "--bedrock-port": free_port(), "--api-port": free_port()}
    argv = [sys.executable, "-m", "local.stack", "--engine", "echo", "--state-dir", str(tmp_path)]
    for flag, port in ports.items():
        argv += [flag, str(port)]
    stack = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert stack.stdout is not None
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = stack.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ready in"):
                break
        ready = [line for line in lines if line.startswith("Ready in")]
        assert len(ready) == 1, "".join(lines)
        assert f"http://127.0.0.1:{ports['--api-port']}/" in ready[0]
        outputs = json.loads((tmp_path / "outputs.json").read_text())
        for key in (
            "UserPoolId",
            "UserPoolClientId",
            "ApiGatewayUrl",
            "AnalyticsBucketName",
            "FirehoseStreamName",
            "AwsEndpointUrl",
        ):
            assert outputs[key], key
        assert all(port_in_use("127.0.0.1", port) for port in ports.values())
        children = _child_pids(stack.pid)
        assert len(children) >= 3  # moto, the Bedrock stand-in, chalice local

        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=30) == 0
    finally:
        if stack.poll() is None:
            stack.kill()
    assert not any(port_in_use("127.0.0.1", port) for port in ports.values())
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists() and _state(pid) != "Z"]
    assert not (tmp_path / "outputs.json").exists()


def _child_pids(parent: int) -> list[int]:
    """Processes whose parent is `parent`, read from /proc (field 4 of stat is the ppid)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return "gone"
