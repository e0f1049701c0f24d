"""Build analytics_infra/template.yaml's resources on a local AWS endpoint by interpreting it.

template      loads the YAML, short-form tags in their long forms
intrinsics    Ref, GetAtt, Sub, Join, Select, pseudo parameters, parameters, creation order
resources/    one module per service family: how to create each type and tell it exists
provisioner   provision_stack/provision/verify/resource_exists and the command line
"""

from __future__ import annotations

from local.provision.model import ProvisionedResource, ProvisionedStack, ProvisioningError
from local.provision.provisioner import (
    main,
    provision,
    provision_stack,
    resource_exists,
    verify,
)
from local.provision.resources import SUPPORTED_RESOURCE_TYPES
from local.provision.template import DEFAULT_TEMPLATE, load_template

__all__ = [
    "DEFAULT_TEMPLATE",
    "SUPPORTED_RESOURCE_TYPES",
    "ProvisionedResource",
    "ProvisionedStack",
    "ProvisioningError",
    "load_template",
    "main",
    "provision",
    "provision_stack",
    "resource_exists",
    "verify",
]
