"""The resource types the local provisioner can create, one module per service family."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from local.provision.resources import (
    cloudwatch,
    cognito,
    dynamodb,
    firehose,
    glue_athena,
    logs_iam,
    s3,
    sns,
)
from local.provision.resources.base import ResourceKind

KINDS: Final[Mapping[str, ResourceKind]] = {
    **cognito.KINDS,
    **s3.KINDS,
    **logs_iam.KINDS,
    **firehose.KINDS,
    **glue_athena.KINDS,
    **dynamodb.KINDS,
    **sns.KINDS,
    **cloudwatch.KINDS,
}

SUPPORTED_RESOURCE_TYPES: Final = frozenset(KINDS)
