"""What every resource family declares, and the helpers its handlers share.

One handler per resource type. Each declares every property it understands: the ones it
applies through the API and the few that only mean something to CloudFormation itself.
A property outside that set fails provisioning, so the template cannot outgrow the local
stack without someone noticing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from local.provision.clients import ServiceClients
from local.provision.intrinsics import StackContext
from local.provision.model import JsonDict, ProvisionedResource

Handler = Callable[[StackContext, str, JsonDict], ProvisionedResource]
Probe = Callable[[ServiceClients, ProvisionedResource], Any]


@dataclass(frozen=True)
class ResourceKind:
    """How to create one resource type, how to tell it exists, and the properties it knows."""

    create: Handler
    probe: Probe  # a describe/get call that raises a "not found" ClientError if it is gone
    properties: frozenset[str]


# Error codes that mean "it is not there" from the probes.
NOT_FOUND_CODES: Final = frozenset(
    {
        "404",
        "NoSuchBucket",
        "NoSuchBucketPolicy",
        "NotFound",
        "NoSuchEntity",
        "ResourceNotFoundException",
        "EntityNotFoundException",
        "NotFoundException",
    }
)


class MissingResourceError(Exception):
    """Raised by a probe whose API answers "not found" with an empty result."""


def missing(resource: ProvisionedResource) -> bool:
    """A probe's answer for a resource its API reported as absent."""
    raise MissingResourceError(resource.logical_id)


def require(items: Sequence[Mapping[str, Any]], key: str, resource: ProvisionedResource) -> bool:
    """True if one of a list call's items is the resource; MissingResourceError otherwise."""
    if not any(item.get(key) == resource.physical_id for item in items):
        raise MissingResourceError(resource.logical_id)
    return True


def pick(props: Mapping[str, Any], *names: str) -> JsonDict:
    """The named properties that are present."""
    return {name: props[name] for name in names if name in props}
