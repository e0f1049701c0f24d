"""Names of one deployment: its stage and region, stacks, exports and Lambda functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from deploy.errors import DeployError

# Every name the template and the app derive from the stage (bucket, pool, table, stream,
# topic, functions) is `<prefix>-<stage>-<suffix>`. The suffixes are fixed and the stage
# cannot end in a hyphen or hold an underscore, so no two stages share a name or an ARN.
RESOURCE_PREFIX: Final = "bedrock-metering"
APP_NAME: Final = "bedrock-saas-metering"  # .chalice/config.json app_name
STAGE_MAX_LENGTH: Final = 16  # the bucket name (<= 63) holds it with the account and region
_STAGE: Final = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
LOCAL_STAGE: Final = "local"  # the offline stack's stage in .chalice/config.json
API_FUNCTION: Final = "api_handler"  # Chalice's name for the function behind API Gateway


def validate_stage(stage: str) -> str:
    """The stage name, if it can name every resource of a deployment; DeployError if not."""
    if not stage:
        raise DeployError("STAGE is required, for example STAGE=dev.")
    if stage == LOCAL_STAGE:
        raise DeployError(
            "STAGE=local is the offline stack (`make run`); give a deployed stage another name."
        )
    if len(stage) > STAGE_MAX_LENGTH or not _STAGE.fullmatch(stage):
        raise DeployError(
            f"STAGE={stage!r} cannot name the resources: use 1-{STAGE_MAX_LENGTH} lowercase "
            "letters and digits, starting with a letter, in words joined by single hyphens "
            "(for example dev, prod, eu-prod)."
        )
    return stage


def validate_region(region: str) -> str:
    """The region, if botocore knows it for Lambda (no network); DeployError if not."""
    import boto3

    if not region:
        raise DeployError("REGION is required, for example REGION=us-east-1.")
    session = boto3.session.Session()
    known = {
        name
        for partition in session.get_available_partitions()
        for name in session.get_available_regions("lambda", partition_name=partition)
    }
    if region not in known:
        raise DeployError(
            f"REGION={region!r} is not an AWS region with Lambda (known: "
            f"{', '.join(sorted(r for r in known if '-iso' not in r))})."
        )
    return region


@dataclass(frozen=True)
class Deployment:
    """One stage in one region: the names its stacks and functions get."""

    stage: str
    region: str

    @classmethod
    def of(cls, stage: str, region: str) -> Deployment:
        """A validated deployment; DeployError names the bad input."""
        return cls(validate_stage(stage), validate_region(region))

    @property
    def partition(self) -> str:
        """The ARN partition of the region (aws, aws-cn, aws-us-gov, ...)."""
        import boto3

        return str(boto3.session.Session().get_partition_for_region(self.region))

    @property
    def data_stack(self) -> str:
        """Users, usage data and budgets: kept by `make destroy` unless DELETE_DATA=1."""
        return f"{RESOURCE_PREFIX}-{self.stage}-data"

    @property
    def infra_stack(self) -> str:
        """Firehose, Athena workgroup, alerts topic, deployment artifacts."""
        return f"{RESOURCE_PREFIX}-{self.stage}-infra"

    @property
    def app_stack(self) -> str:
        """The Chalice app: API, functions, their roles, logs and alarms."""
        return f"{RESOURCE_PREFIX}-{self.stage}-app"

    @property
    def stacks(self) -> tuple[str, str, str]:
        """In deployment order."""
        return (self.data_stack, self.infra_stack, self.app_stack)

    def export(self, output: str) -> str:
        """The CloudFormation export name of a stack output (outputs are CamelCase)."""
        return f"{RESOURCE_PREFIX}-{self.stage}-{output}"

    def function_name(self, chalice_name: str) -> str:
        """The Lambda function name, as `chalice deploy` would give it."""
        if chalice_name == API_FUNCTION:
            return f"{APP_NAME}-{self.stage}"
        return f"{APP_NAME}-{self.stage}-{chalice_name}"

    @property
    def api_name(self) -> str:
        """The REST API's name (the ApiName dimension of its CloudWatch metrics)."""
        return f"{APP_NAME}-{self.stage}"

    @property
    def metrics_namespace(self) -> str:
        """Where the stage's own CloudWatch metrics go."""
        return f"BedrockMetering/{self.stage}"
