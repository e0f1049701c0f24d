"""`make package`: everything a deployment needs, rendered offline under build/<stage>/.

    data.template.json    users, usage data, catalog, budgets (kept by `make destroy`)
    infra.template.json   usage stream, Athena workgroup, alerts topic, artifacts bucket
    app.template.json     the Chalice app (SAM): API, functions, roles, logs, alarms
    deployment.zip        the Lambda bundle the app template's CodeUri names
    manifest.json         stage, region, stacks, layer (and where it came from), functions

Nothing here needs AWS credentials, and no tracked file changes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from deploy import app_template, cfn, chalice_package, functions, iam, stacks
from deploy.errors import DeployError
from deploy.layers import Layer
from deploy.naming import Deployment

ROOT: Final = Path(__file__).resolve().parent.parent
BUILD: Final = ROOT / "build"
DATA_TEMPLATE: Final = "data.template.json"
INFRA_TEMPLATE: Final = "infra.template.json"
APP_TEMPLATE: Final = "app.template.json"
BUNDLE: Final = "deployment.zip"
MANIFEST: Final = "manifest.json"
RENDERED: Final = (DATA_TEMPLATE, INFRA_TEMPLATE, APP_TEMPLATE, BUNDLE, MANIFEST)

Say = Callable[[str], None]


@dataclass(frozen=True)
class Package:
    """A rendered deployment on disk."""

    directory: Path
    deployment: Deployment
    layer: Layer

    @property
    def templates(self) -> dict[str, Path]:
        """Stack name -> its template, in deployment order."""
        d = self.deployment
        return {
            d.data_stack: self.directory / DATA_TEMPLATE,
            d.infra_stack: self.directory / INFRA_TEMPLATE,
            d.app_stack: self.directory / APP_TEMPLATE,
        }

    @property
    def bundle(self) -> Path:
        return self.directory / BUNDLE

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(json.loads((self.directory / MANIFEST).read_text(encoding="utf-8")))


def default_directory(stage: str) -> Path:
    return BUILD / stage


def build(
    deployment: Deployment,
    layer: Layer,
    directory: Path | None = None,
    *,
    reserved_concurrency: bool = True,
    say: Say = print,
) -> Package:
    """Render the deployment; everything is checked before the first file is written."""
    if sys.version_info[:2] != (3, 11):
        raise DeployError("Package with Python 3.11: Chalice builds for the runtime it runs on.")
    out = directory or default_directory(deployment.stage)
    config = json.loads(functions.CHALICE_CONFIG.read_text(encoding="utf-8"))
    sizing = functions.sizing(config)
    environment = chalice_package.stage_environment(deployment.stage, config)
    models = iam.stage_models(environment)
    aliases = json.loads(environment.get("MODEL_ALIASES") or "{}")
    infra = stacks.split(deployment)

    say(f"Packaging stage {deployment.stage} for {deployment.region} into {out}")
    cache = BUILD / ".chalice-package" / deployment.stage
    chalice = chalice_package.run(
        deployment.stage,
        cache,
        reserved_concurrency=reserved_concurrency,
        config=config,
        say=say,
    )
    app = app_template.render(
        chalice.template, deployment, layer, model_ids=models, model_aliases=aliases
    )

    out.mkdir(parents=True, exist_ok=True)
    for name in RENDERED:
        (out / name).unlink(missing_ok=True)
    sizes = {
        DATA_TEMPLATE: cfn.dump(infra.data, out / DATA_TEMPLATE),
        INFRA_TEMPLATE: cfn.dump(infra.infra, out / INFRA_TEMPLATE),
        APP_TEMPLATE: cfn.dump(app, out / APP_TEMPLATE),
    }
    shutil.copy2(chalice.bundle, out / BUNDLE)
    with zipfile.ZipFile(out / BUNDLE) as archive:
        unzipped = sum(info.file_size for info in archive.infolist())
    zipped = (out / BUNDLE).stat().st_size
    names = app_template.chalice_functions(app)
    manifest = {
        "stage": deployment.stage,
        "region": deployment.region,
        "stacks": {
            deployment.data_stack: DATA_TEMPLATE,
            deployment.infra_stack: INFRA_TEMPLATE,
            deployment.app_stack: APP_TEMPLATE,
        },
        "template_bytes": sizes,
        "bundle": {
            "file": BUNDLE,
            "bytes": zipped,
            "unzipped_bytes": unzipped,
            "sha256": hashlib.sha256((out / BUNDLE).read_bytes()).hexdigest(),
        },
        "pandas_layer": {
            "arn": layer.arn,
            "awswrangler": layer.awswrangler,
            "source": layer.source,
        },
        "model_id": models[0],
        "models": list(models),
        "exports": infra.exports,
        "functions": {
            name: {
                "function_name": deployment.function_name(name),
                "logical_id": names[name][0],
                "memory_mb": size.memory_mb,
                "timeout_s": size.timeout_s,
                "reserved_concurrency": size.reserved_concurrency if reserved_concurrency else None,
                "pandas_layer": functions.FUNCTIONS[name].pandas_layer,
            }
            for name, size in sizing.items()
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    say(f"  pandas layer {layer.arn} ({layer.source})")
    for name, size in sizes.items():
        say(f"  {name}: {size:,} bytes")
    say(f"  {BUNDLE}: {zipped:,} bytes ({unzipped:,} unzipped)")
    return Package(out, deployment, layer)
