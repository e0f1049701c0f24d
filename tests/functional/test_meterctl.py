"""meterctl's errors when there is nothing to talk to: clear words, exit code 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.running import free_port
from meterctl.cli import main


@pytest.fixture
def dead_stack_outputs(tmp_path: Path) -> Path:
    port = free_port()  # nothing listens there
    outputs = {
        "UserPoolId": "us-east-1_gone",
        "UserPoolClientId": "client",
        "ApiGatewayUrl": f"http://127.0.0.1:{port}/",
        "AwsEndpointUrl": f"http://127.0.0.1:{port}",
        "Region": "us-east-1",
    }
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    return path


def test_login_against_a_stopped_stack_says_so(
    dead_stack_outputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["--outputs", str(dead_stack_outputs), "login", "--username", "a", "--password", "b"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "Cannot reach Cognito" in err
    assert "make run" in err


def test_chat_against_a_stopped_stack_says_so(
    dead_stack_outputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--outputs", str(dead_stack_outputs), "chat", "hi", "--token", "t"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Cannot reach the API" in err


def test_without_outputs_the_local_stack_is_not_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("METER_OUTPUTS", raising=False)
    code = main(["login", "--username", "a", "--password", "b"])
    assert code == 2
    assert "local stack is not running" in capsys.readouterr().err
