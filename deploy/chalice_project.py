"""A project directory for `chalice deploy --stage <stage>`, generated from deployed stacks.

For operators who deploy the app with Chalice instead of `make deploy`: the data and infra
stacks come first (`make deploy-infra`), then this writes build/<stage>/chalice-deploy/ with
a copy of the app and a `.chalice/config.json` holding the stage's real values (from
build/<stage>/outputs.json) and one concrete IAM policy file per function, from the same
definitions `make deploy` uses. Nothing is written to the tracked `.chalice/`. Chalice keeps
its deployment state in that directory's `.chalice/deployed/`; keep the directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Final

from chalicelib.settings import OUTPUT_TO_ENV
from deploy import cfn, iam
from deploy.chalice_package import PROJECT_FILES, ROOT, stage_environment
from deploy.errors import DeployError
from deploy.functions import CHALICE_CONFIG, FUNCTIONS, sizing
from deploy.layers import Layer
from deploy.naming import Deployment

DIRECTORY: Final = "chalice-deploy"


def write(deployment: Deployment, outputs: dict[str, str], layer: Layer, build: Path) -> Path:
    """Write the project for `chalice deploy`; its path."""
    missing = sorted(set(OUTPUT_TO_ENV) - set(outputs))
    if missing:
        raise DeployError(
            f"the outputs lack {missing}: deploy the data and infra stacks first "
            f"(`make deploy-infra STAGE={deployment.stage} REGION={deployment.region}`)."
        )
    account = outputs["UserPoolArn"].split(":")[4]
    config: dict[str, Any] = json.loads(CHALICE_CONFIG.read_text(encoding="utf-8"))
    sizing(config)
    environment = stage_environment(deployment.stage, config)
    environment.update({env: outputs[name] for name, env in OUTPUT_TO_ENV.items()})
    resolver = cfn.Resolver(
        pseudo={
            "AWS::Partition": deployment.partition,
            "AWS::Region": deployment.region,
            "AWS::AccountId": account,
        },
        names={variable: outputs[output] for variable, output in iam.VARIABLES.items()},
    )
    project = build / DIRECTORY
    chalice_dir = project / ".chalice"
    chalice_dir.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        target = project / name
        if target.is_dir():
            shutil.rmtree(target)
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        else:
            shutil.copy2(source, target)

    functions: dict[str, Any] = {}
    models = iam.stage_models(environment)
    aliases = json.loads(environment.get("MODEL_ALIASES") or "{}")
    for name, spec in FUNCTIONS.items():
        function_name = deployment.function_name(name)
        document = iam.policy(iam.grants(spec, models, aliases), function_name)
        # Without the app stack nothing creates the log group: Lambda does, on first run.
        document["Statement"][0]["Action"].insert(0, "logs:CreateLogGroup")
        policy_file = f"policy-{name}.json"
        (chalice_dir / policy_file).write_text(
            json.dumps(iam.concrete(document, resolver), indent=2) + "\n", encoding="utf-8"
        )
        entry: dict[str, Any] = {"iam_policy_file": policy_file}
        if spec.pandas_layer:
            entry["layers"] = [layer.arn]
        functions[name] = entry
    config["environment_variables"] = {}
    config["stages"] = {
        deployment.stage: {
            "api_gateway_stage": "api",
            "autogen_policy": False,
            "environment_variables": environment,
            "lambda_functions": functions,
        }
    }
    (chalice_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")
    return project
