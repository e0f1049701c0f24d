"""The AWS SDK for pandas layer for a region: from its public SSM parameter, or the table."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from chalicelib.aws_errors import error_code
from deploy.errors import DeployError

ROOT: Final = Path(__file__).resolve().parent.parent
TABLE: Final = ROOT / "analytics_infra" / "pandas_layers.json"
DEV_REQUIREMENTS: Final = ROOT / "requirements-dev.txt"
PYTHON: Final = "3.11"  # the Lambda runtime Chalice packages for (python3.11)
ARCHITECTURE: Final = "x86_64"
# Documented in aws-sdk-pandas docs/source/install.rst ("Layer ARNs can also be obtained from
# SSM public parameters"); SSM parameters are regional, so it is read in the target region.
SSM_PARAMETER: Final = "/aws/service/aws-sdk-pandas/{version}/py{python}/{architecture}/layer-arn"
_PIN: Final = re.compile(r"^awswrangler==(?P<version>\S+)", re.MULTILINE)
_ARN: Final = re.compile(
    r"^arn:aws[a-z-]*:lambda:(?P<region>[a-z0-9-]+):\d{12}:layer:AWSSDKPandas-Python311:\d+$"
)

Source = Literal["auto", "ssm", "table"]


@dataclass(frozen=True)
class Layer:
    """A resolved layer ARN and where it came from (shown to the operator, kept in the build)."""

    arn: str
    awswrangler: str
    source: str


def pinned_version(requirements: Path = DEV_REQUIREMENTS) -> str:
    """The awswrangler version the tests run (requirements-dev.txt)."""
    match = _PIN.search(requirements.read_text(encoding="utf-8"))
    if match is None:
        raise DeployError(f"{requirements.name} pins no awswrangler version (awswrangler==X.Y.Z).")
    return match.group("version")


def from_table(region: str, version: str, table: Path = TABLE) -> Layer:
    """The layer from the checked-in table (offline); DeployError if it has none."""
    document: dict[str, Any] = json.loads(table.read_text(encoding="utf-8"))
    if version not in document["serves"]:
        raise DeployError(
            f"{table.name} lists the layers published for awswrangler "
            f"{document['published_for']}, but requirements-dev.txt pins {version}. Update the "
            f"table from {document['source'].split()[0]} (or package with credentials, "
            "LAYER=ssm)."
        )
    arn = document["layers"].get(region)
    if arn is None:
        raise DeployError(
            f"No AWS SDK for pandas layer for Python {PYTHON} ({ARCHITECTURE}) is published in "
            f"{region} (table {table.name}, awswrangler {document['published_for']}; regions "
            f"with one: {', '.join(sorted(document['layers']))}). Deploy to one of those "
            "regions, or package with credentials (LAYER=ssm) if AWS has published one since."
        )
    check_arn(arn, region)
    return Layer(arn, version, f"table {table.name} (awswrangler {document['published_for']})")


def from_ssm(region: str, version: str, client: Any) -> Layer:
    """The layer from the public SSM parameter in `region`; DeployError if it is not there."""
    from botocore.exceptions import ClientError

    name = SSM_PARAMETER.format(version=version, python=PYTHON, architecture=ARCHITECTURE)
    try:
        arn = str(client.get_parameter(Name=name)["Parameter"]["Value"])
    except ClientError as error:
        if error_code(error) != "ParameterNotFound":
            raise
        raise DeployError(
            f"AWS publishes no AWS SDK for pandas layer for awswrangler {version} "
            f"(Python {PYTHON}, {ARCHITECTURE}) in {region}: SSM parameter {name} not found. "
            f"Deploy to another region, or use the documented layer from {TABLE.name} with "
            "LAYER=table."
        ) from None
    check_arn(arn, region)
    return Layer(arn, version, f"SSM {name}")


def resolve(region: str, source: Source = "auto", session: Any = None) -> Layer:
    """The layer for `region` and the pinned awswrangler.

    `table` never touches the network. `ssm` reads the public parameter (credentials needed).
    `auto` reads SSM when credentials are configured, and otherwise (or if SSM cannot be
    reached) uses the table; a region SSM says has no layer is an error either way.
    """
    version = pinned_version()
    if source == "table":
        return from_table(region, version)
    if session is None:
        import boto3

        session = boto3.session.Session(region_name=region)
    if source == "auto" and session.get_credentials() is None:
        return from_table(region, version)
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    quick = Config(connect_timeout=5, read_timeout=10, retries={"total_max_attempts": 2})
    try:
        return from_ssm(region, version, session.client("ssm", region_name=region, config=quick))
    except (BotoCoreError, ClientError) as error:
        if source == "ssm":
            raise DeployError(
                f"Cannot read the pandas layer from SSM in {region}: {error}. Check the "
                "credentials, or use LAYER=table."
            ) from None
        layer = from_table(region, version)
        return Layer(layer.arn, layer.awswrangler, f"{layer.source}; SSM unreadable: {error}")


def check_arn(arn: str, region: str) -> None:
    """DeployError unless `arn` is a Python 3.11 AWS SDK for pandas layer in `region`."""
    match = _ARN.match(arn)
    if match is None or match.group("region") != region:
        raise DeployError(f"{arn} is not an AWS SDK for pandas Python 3.11 layer in {region}.")


_ANY_LAYER: Final = re.compile(
    r"^arn:aws[a-z-]*:lambda:(?P<region>[a-z0-9-]+):\d{12}:layer:[A-Za-z0-9_-]+:\d+$"
)


def given(arn: str, region: str) -> Layer:
    """A layer version ARN the operator chose (PANDAS_LAYER_ARN); it must be in `region`."""
    match = _ANY_LAYER.match(arn)
    if match is None or match.group("region") != region:
        raise DeployError(f"PANDAS_LAYER_ARN={arn} is not a Lambda layer version in {region}.")
    return Layer(arn, pinned_version(), "given (PANDAS_LAYER_ARN)")
