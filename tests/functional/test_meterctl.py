"""meterctl's errors when there is nothing to talk to: clear words, exit code 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from local.running import free_port
from meterctl.cli import build_parser, chat_body, main


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


def chat_args(*argv: str) -> Any:
    return build_parser().parse_args(["chat", *argv])


def test_chat_sends_the_model_system_text_and_max_tokens_given() -> None:
    args = chat_args("hi", "--model", "amazon.nova-micro-v1:0", "--system", "Be brief.")
    assert chat_body(args) == {
        "prompt": "hi",
        "system": "Be brief.",
        "model": "amazon.nova-micro-v1:0",
    }
    assert chat_body(chat_args("hi", "--max-tokens", "8")) == {"prompt": "hi", "max_tokens": 8}


def test_chat_sends_a_conversation_from_a_file(tmp_path: Path) -> None:
    messages = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one."},
    ]
    path = tmp_path / "conversation.json"
    path.write_text(json.dumps(messages))
    assert chat_body(chat_args("--messages", str(path))) == {"messages": messages}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "Give a prompt or --messages"),
        (("hi", "--messages", "x.json"), "Give a prompt or --messages"),
        (("--messages", "/nonexistent/x.json"), "Cannot read /nonexistent/x.json"),
    ],
)
def test_chat_needs_one_prompt_or_conversation(
    dead_stack_outputs: Path,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
) -> None:
    code = main(["--outputs", str(dead_stack_outputs), "chat", *argv, "--token", "t"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_conversation_file_that_is_not_json_is_named(
    dead_stack_outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.json"
    path.write_text("[{oops")
    code = main(["--outputs", str(dead_stack_outputs), "chat", "--messages", str(path)])
    assert code == 2
    assert f"{path} is not JSON" in capsys.readouterr().err
