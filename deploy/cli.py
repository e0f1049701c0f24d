"""Command line of the deploy tooling (the Makefile's package, deploy, destroy and smoke)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from deploy.errors import DeployError
from deploy.naming import LOCAL_STAGE, Deployment, validate_stage

ROOT: Final = Path(__file__).resolve().parent.parent
LOCAL_OUTPUTS: Final = ROOT / ".local" / "outputs.json"


def _stage_and_region(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", default="", help="deployed stage, e.g. dev (not 'local')")
    parser.add_argument("--region", default="", help="AWS region, e.g. ap-northeast-2")


def _layer(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--layer",
        choices=["auto", "ssm", "table"],
        default=default,
        help="where the AWS SDK for pandas layer ARN comes from (default: %(default)s)",
    )
    parser.add_argument("--layer-arn", default="", help="use this layer version ARN instead")


def _build_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="default: build/<stage>")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy", description="Package, deploy, destroy and smoke-test a stage."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    package = commands.add_parser("package", help="render everything under build/<stage>/")
    _stage_and_region(package)
    _layer(package, "auto")
    _build_dir(package)
    package.add_argument("--no-reserved-concurrency", action="store_true")

    deploy = commands.add_parser("deploy", help="package, then deploy the three stacks")
    _stage_and_region(deploy)
    _layer(deploy, "ssm")
    _build_dir(deploy)
    deploy.add_argument("--no-reserved-concurrency", action="store_true")
    deploy.add_argument("--glue-database", default="", help="Glue database for a new stage")
    deploy.add_argument("--athena-workgroup", default="", help="Athena workgroup name")
    deploy.add_argument(
        "--infra-only", action="store_true", help="data and infra stacks only (chalice deploy)"
    )

    destroy = commands.add_parser("destroy", help="delete the app and infra (and data)")
    _stage_and_region(destroy)
    destroy.add_argument("--confirm", default="", help="the stage name, to skip the prompt")
    destroy.add_argument("--delete-data", action="store_true", help="delete the data too")

    smoke = commands.add_parser("smoke", help="the reference CLI flow against a deployment")
    smoke.add_argument("--stage", default="", help="reads build/<stage>/outputs.json")
    smoke.add_argument("--outputs", type=Path, default=None, help="an outputs file instead")

    project = commands.add_parser(
        "chalice-project", help="write build/<stage>/chalice-deploy/ for `chalice deploy`"
    )
    _stage_and_region(project)
    _layer(project, "ssm")
    _build_dir(project)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return _run(args)
    except DeployError as error:
        print(f"deploy: {error}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as error:
        print(f"deploy: an AWS call failed: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deploy: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from deploy import package as packaging

    if args.command == "smoke":
        from deploy.smoke import smoke

        smoke(_smoke_outputs(args.stage, args.outputs))
        return 0
    deployment = Deployment.of(args.stage, args.region)
    if args.command == "package":
        from deploy import layers

        layer = (
            layers.given(args.layer_arn, deployment.region)
            if args.layer_arn
            else layers.resolve(deployment.region, args.layer)
        )
        packaging.build(
            deployment,
            layer,
            args.out,
            reserved_concurrency=not args.no_reserved_concurrency,
        )
        return 0
    if args.command == "deploy":
        from deploy.deployer import Options, deploy

        options = Options(
            layer_source=args.layer,
            layer_arn=args.layer_arn or None,
            glue_database=args.glue_database or None,
            athena_workgroup=args.athena_workgroup or None,
            reserved_concurrency=not args.no_reserved_concurrency,
            infra_only=args.infra_only,
        )
        deploy(deployment, options, directory=args.out)
        return 0
    if args.command == "destroy":
        from deploy.destroyer import confirm, destroy

        confirm(
            deployment,
            args.confirm or None,
            delete_data=args.delete_data,
            interactive=sys.stdin.isatty(),
        )
        destroy(deployment, delete_data=args.delete_data)
        return 0
    if args.command == "chalice-project":
        return _chalice_project(args, deployment)
    raise DeployError(f"unknown command {args.command}")


def _smoke_outputs(stage: str, outputs: Path | None) -> Path:
    if outputs is not None:
        return outputs
    if stage == LOCAL_STAGE:
        return LOCAL_OUTPUTS
    from deploy.deployer import OUTPUTS_FILE
    from deploy.package import default_directory

    return default_directory(validate_stage(stage)) / OUTPUTS_FILE


def _chalice_project(args: argparse.Namespace, deployment: Deployment) -> int:
    from deploy import chalice_project, credentials, layers
    from deploy.deployer import OUTPUTS_FILE
    from deploy.package import default_directory

    build = args.out or default_directory(deployment.stage)
    outputs_file = build / OUTPUTS_FILE
    if not outputs_file.exists():
        raise DeployError(
            f"No {outputs_file}: run `make deploy-infra STAGE={deployment.stage} "
            f"REGION={deployment.region}` first."
        )
    outputs = json.loads(outputs_file.read_text(encoding="utf-8"))
    if args.layer_arn:
        layer = layers.given(args.layer_arn, deployment.region)
    elif args.layer == "table":
        layer = layers.resolve(deployment.region, "table")
    else:
        account = credentials.connect(deployment.region)
        layer = layers.resolve(deployment.region, args.layer, account.session)
    project = chalice_project.write(deployment, outputs, layer, build)
    print(f"Wrote {project}. Deploy with:")
    print(
        f"  AWS_DEFAULT_REGION={deployment.region} .venv/bin/chalice --project-dir {project} "
        f"deploy --stage {deployment.stage}"
    )
    return 0
