"""What provisioning produces, and the one error it raises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]


class ProvisioningError(Exception):
    """The template uses something this provisioner does not implement, or is inconsistent."""


@dataclass(frozen=True)
class ProvisionedResource:
    """One created (or found) resource: what !Ref and !GetAtt return for it."""

    logical_id: str
    resource_type: str
    physical_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    # The resource this one lives in, where its API needs it: the user pool of a client or
    # group, the database of a table, the log group of a log stream.
    parent_id: str | None = None


@dataclass(frozen=True)
class ProvisionedStack:
    """The local equivalent of a deployed stack: its resources and its outputs."""

    stack_name: str
    region: str
    resources: Mapping[str, ProvisionedResource]
    outputs: Mapping[str, str]
