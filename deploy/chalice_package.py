"""`chalice package` for a deployed stage, in a throwaway copy of the project.

The copy's `.chalice/config.json` is generated: the tracked one keeps only settings (model,
limits, function sizes), never a deployment's names or ARNs. The stack values the app needs
are filled in later by CloudFormation (deploy/app_template.py), so placeholders stand in here.
The bundle does not depend on the region: one run per stage and code serves every region.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from chalicelib.settings import OUTPUT_TO_ENV, Settings
from deploy.errors import DeployError
from deploy.functions import CHALICE_CONFIG, FUNCTIONS

ROOT: Final = Path(__file__).resolve().parent.parent
PROJECT_FILES: Final = ("app.py", "requirements.txt", "chalicelib")
# Settings every deployed stage gets (a stage block in .chalice/config.json may add others).
DEPLOYED_ENVIRONMENT: Final[Mapping[str, str]] = {
    "TOKEN_VERIFICATION": "apigateway",  # API Gateway's Cognito authorizer checks the token
    "QUERY_ENGINE": "athena",
}
PLACEHOLDER: Final = "PACKAGING-PLACEHOLDER"
PLACEHOLDER_POOL_ARN: Final = (
    f"arn:aws:cognito-idp:us-east-1:000000000000:userpool/us-east-1_{PLACEHOLDER}"
)
POLICY_FILE: Final = "policy-packaging-placeholder.json"
KEEP_OUTPUTS: Final = 4

Say = Callable[[str], None]


@dataclass(frozen=True)
class ChaliceOutput:
    """What `chalice package` wrote: the SAM template and the Lambda bundle."""

    template: dict[str, Any]
    bundle: Path
    reused: bool


def stage_environment(stage: str, config: Mapping[str, Any]) -> dict[str, str]:
    """The stage's environment: global settings, the deployed baseline, the stage's own block.

    Stack values are not allowed in the tracked config: CloudFormation provides them.
    """
    block = config.get("stages", {}).get(stage, {})
    own = dict(block.get("environment_variables", {}))
    tracked = sorted(set(own) & set(OUTPUT_TO_ENV.values()))
    if tracked:
        raise DeployError(
            f".chalice/config.json stage {stage} sets {tracked}: remove them, the deployment "
            "wires them from its stacks."
        )
    environment = {
        **config.get("environment_variables", {}),
        **DEPLOYED_ENVIRONMENT,
        **own,
        "STAGE": stage,
    }
    placeholders = dict.fromkeys(OUTPUT_TO_ENV.values(), PLACEHOLDER)
    try:
        Settings.from_env({**environment, **placeholders, "AWS_REGION": "us-east-1"})
    except Exception as error:
        raise DeployError(f"stage {stage}'s settings are invalid: {error}") from None
    return {str(k): str(v) for k, v in environment.items()}


def project_config(
    stage: str, config: Mapping[str, Any], *, reserved_concurrency: bool
) -> dict[str, Any]:
    """The throwaway project's config.json: one stage, placeholders for the stack values."""
    generated = copy.deepcopy(dict(config))
    environment = stage_environment(stage, config)
    environment.update(dict.fromkeys(OUTPUT_TO_ENV.values(), PLACEHOLDER))
    environment["USER_POOL_ARN"] = PLACEHOLDER_POOL_ARN  # app.py builds the authorizer from it
    generated["environment_variables"] = {}
    if not reserved_concurrency:
        for entry in generated.get("lambda_functions", {}).values():
            entry.pop("reserved_concurrency", None)
    generated["stages"] = {
        stage: {
            "api_gateway_stage": "api",
            "autogen_policy": False,
            "environment_variables": environment,
            # One role per function; deploy/app_template.py replaces each policy.
            "lambda_functions": {name: {"iam_policy_file": POLICY_FILE} for name in FUNCTIONS},
        }
    }
    return generated


def run(
    stage: str,
    cache: Path,
    *,
    reserved_concurrency: bool = True,
    config: Mapping[str, Any] | None = None,
    say: Say = print,
) -> ChaliceOutput:
    """Package the stage (or reuse the last run for the same code and settings)."""
    base = config if config is not None else json.loads(CHALICE_CONFIG.read_text("utf-8"))
    generated = project_config(stage, base, reserved_concurrency=reserved_concurrency)
    project = cache / "project"
    _copy_project(project)
    chalice_dir = project / ".chalice"
    chalice_dir.mkdir(exist_ok=True)
    (chalice_dir / "config.json").write_text(json.dumps(generated, indent=2), encoding="utf-8")
    placeholder_policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}],
    }
    (chalice_dir / POLICY_FILE).write_text(json.dumps(placeholder_policy), encoding="utf-8")

    digest = _digest(project)
    out = cache / "out" / digest[:16]
    template_path, bundle = out / "sam.json", out / "deployment.zip"
    if template_path.exists() and bundle.exists():
        say(f"  chalice package: code and settings unchanged, reusing {bundle}")
        return ChaliceOutput(json.loads(template_path.read_text("utf-8")), bundle, True)

    shutil.rmtree(out, ignore_errors=True)
    say("  chalice package (downloads Lambda wheels from PyPI on the first run) ...")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environment["AWS_DEFAULT_REGION"] = "us-east-1"  # required by chalice; nothing is called
    command = [
        sys.executable,
        "-c",
        "import sys; from chalice.cli import main; sys.exit(main())",
        "package",
        "--stage",
        stage,
        str(out),
    ]
    result = subprocess.run(  # noqa: S603 (our interpreter, fixed arguments)
        command, cwd=project, env=environment, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        detail = (result.stderr or result.stdout).strip()[-2000:]
        raise DeployError(f"chalice package failed for stage {stage}:\n{detail}")
    _prune(out.parent, keep=KEEP_OUTPUTS)
    return ChaliceOutput(json.loads(template_path.read_text("utf-8")), bundle, False)


def _prune(outputs: Path, keep: int) -> None:
    """Keep the `keep` most recent packages (one per code and settings combination)."""
    runs = sorted(outputs.iterdir(), key=lambda path: path.stat().st_mtime, reverse=True)
    for old in runs[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _copy_project(project: Path) -> None:
    """Fresh copies of the app's files; Chalice's own wheel cache (.chalice/deployments) stays."""
    project.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source, target = ROOT / name, project / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        if source.is_dir():
            shutil.copytree(
                source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
            )
        else:
            shutil.copy2(source, target)


def _digest(project: Path) -> str:
    """Everything that decides chalice's output: the files, the config, chalice and Python."""
    from importlib.metadata import version

    digest = hashlib.sha256()
    digest.update(f"chalice {version('chalice')} python {sys.version_info[:2]}".encode())
    paths = [project / ".chalice" / "config.json", project / ".chalice" / POLICY_FILE]
    for name in PROJECT_FILES:
        path = project / name
        paths.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    for path in paths:
        digest.update(str(path.relative_to(project)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
