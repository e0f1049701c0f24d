"""Write the analytics stack's outputs into a stage's environment in .chalice/config.json."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3

from chalicelib.settings import OUTPUT_TO_ENV

_REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_CONFIG = _REPO_ROOT / ".chalice" / "config.json"


class OutputsError(Exception):
    """The stack outputs or the Chalice config are not what this tool expects."""


def outputs_from_stack(
    stack_name: str, client: Any = None, region: str | None = None
) -> dict[str, str]:
    """The outputs of a deployed CloudFormation stack, read with DescribeStacks."""
    if client is None:
        client = boto3.client("cloudformation", region_name=region)
    stacks = client.describe_stacks(StackName=stack_name)["Stacks"]
    if not stacks:
        raise OutputsError(f"stack {stack_name} not found")
    return _from_output_list(stacks[0].get("Outputs", []))


def outputs_from_file(path: Path | str) -> dict[str, str]:
    """Outputs saved as JSON: a flat {name: value} object, an Outputs list, or describe-stacks."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(document, dict) and "Stacks" in document:
        return _from_output_list(document["Stacks"][0].get("Outputs", []))
    if isinstance(document, list):
        return _from_output_list(document)
    if isinstance(document, dict):
        return {str(key): str(value) for key, value in document.items()}
    raise OutputsError(f"{path}: not a JSON object or list of stack outputs")


def _from_output_list(outputs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    return {str(item["OutputKey"]): str(item["OutputValue"]) for item in outputs}


def environment_from_outputs(outputs: Mapping[str, str]) -> dict[str, str]:
    """The Chalice environment variables for the outputs; every mapped output must be present."""
    missing = sorted(set(OUTPUT_TO_ENV) - set(outputs))
    if missing:
        raise OutputsError(f"stack outputs lack {', '.join(missing)}: is it analytics_infra?")
    return {env: outputs[output] for output, env in OUTPUT_TO_ENV.items()}


def write_stage_environment(
    config_path: Path | str, stage: str, environment: Mapping[str, str]
) -> dict[str, Any]:
    """Merge ``environment`` into the stage's environment_variables; leave all else as it was."""
    path = Path(config_path)
    if not path.exists():
        raise OutputsError(f"{path} not found: run this from the Chalice project")
    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise OutputsError(f"{path}: not a Chalice config (expected a JSON object)")
    stage_config = config.setdefault("stages", {}).setdefault(stage, {})
    stage_config.setdefault("environment_variables", {}).update(environment)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: read outputs from a stack or a file, write them into the stage config."""
    parser = argparse.ArgumentParser(
        prog="python -m analytics_infra.outputs_to_config", description=__doc__
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack-name", help="deployed stack to read with DescribeStacks")
    source.add_argument("--outputs-file", type=Path, help="JSON file of the stack outputs")
    parser.add_argument("--stage", required=True, help="Chalice stage to configure (dev, prod)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--region", default=None, help="stack region (default: from AWS config)")
    args = parser.parse_args(argv)
    if args.stack_name:
        outputs = outputs_from_stack(args.stack_name, region=args.region)
    else:
        outputs = outputs_from_file(args.outputs_file)
    environment = environment_from_outputs(outputs)
    write_stage_environment(args.config, args.stage, environment)
    for name, value in environment.items():
        sys.stdout.write(f"{args.stage}: {name}={value}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
