"""Argument parsing and output for meterctl."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from meterctl import accounts, analytics_cmds, api, plan_cmds
from meterctl.target import CliError, Target

Handler = Callable[[argparse.Namespace, Target], int]


def cmd_user_create(args: argparse.Namespace, target: Target) -> int:
    accounts.create_user(
        target,
        tenant_id=args.tenant,
        username=args.username,
        password=args.password,
        email=args.email,
        admin=args.admin,
    )
    role = " (admin)" if args.admin else ""
    print(f"Created user {args.username!r} for tenant {args.tenant!r}{role}.")
    return 0


def cmd_login(args: argparse.Namespace, target: Target) -> int:
    print(accounts.login(target, username=args.username, password=args.password))
    return 0


def chat_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /bedrock/chat body: a prompt or a conversation (--messages), and the options
    given. The API checks it; this only reads the conversation file."""
    if (args.prompt is None) == (args.messages is None):
        raise CliError("Give a prompt or --messages FILE.json, not both.")
    body: dict[str, Any] = {}
    if args.messages is not None:
        body["messages"] = _conversation(args.messages)
    else:
        body["prompt"] = args.prompt
    for field, value in (
        ("system", args.system),
        ("model", args.model),
        ("max_tokens", args.max_tokens),
    ):
        if value is not None:
            body[field] = value
    return body


def _conversation(path: str) -> Any:
    """The messages in a JSON file ('-': standard input): a list of {"role", "content"}."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return json.loads(text)
    except OSError as exc:
        raise CliError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    except ValueError as exc:
        raise CliError(f"{path} is not JSON: {exc}.") from None


def cmd_chat(args: argparse.Namespace, target: Target) -> int:
    body = chat_body(args)
    response = api.call(
        target, "POST", "/bedrock/chat", accounts.token_for(args, target), body=body
    )
    result = api.require_ok(response)
    print(result["response"])
    print(f"usage event: {response.headers.get('X-Request-Id', '?')}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meterctl",
        description="Operate Bedrock SaaS Metering: tenant users, login, chat, usage, SQL, plans.",
    )
    parser.add_argument(
        "--outputs",
        help="stack outputs JSON of the target deployment "
        "(default: $METER_OUTPUTS or the local stack's .local/outputs.json)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    user = commands.add_parser("user", help="tenant users").add_subparsers(
        dest="action", required=True
    )
    create = user.add_parser("create", help="create a tenant user with a permanent password")
    create.add_argument("--tenant", required=True, help="tenant id (immutable custom:tenant_id)")
    create.add_argument("--username", required=True)
    create.add_argument("--password", required=True)
    create.add_argument("--email")
    create.add_argument("--admin", action="store_true", help="also add to the 'admins' group")
    create.set_defaults(handler=cmd_user_create)

    login = commands.add_parser("login", help="log in and print the ID token")
    login.add_argument("--username", required=True)
    login.add_argument("--password", required=True)
    login.set_defaults(handler=cmd_login)

    chat = commands.add_parser("chat", help="send a prompt or a conversation as a tenant user")
    chat.add_argument("prompt", nargs="?", help="the prompt (or give --messages)")
    chat.add_argument(
        "--messages",
        metavar="FILE.json",
        help='a conversation instead of a prompt: a JSON list of {"role": "user"|"assistant", '
        '"content": "..."}, alternating, first and last "user" (- reads standard input)',
    )
    chat.add_argument("--system", metavar="TEXT", help="instructions for the model (system text)")
    chat.add_argument(
        "--model",
        metavar="ID",
        help="a model id, inference profile id or ARN your plan allows (default: the stage's)",
    )
    chat.add_argument("--max-tokens", type=int)
    accounts.add_credential_arguments(chat)
    chat.set_defaults(handler=cmd_chat)

    analytics_cmds.register(commands)  # sql, usage, backfill
    plan_cmds.register(commands)  # plan show, plan set, plan mine
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        target = Target.load(args.outputs)
        handler: Handler = args.handler
        return handler(args, target)
    except CliError as exc:
        print(f"meterctl: {exc}", file=sys.stderr)
        return 2
