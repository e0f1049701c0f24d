"""Template evaluation: intrinsic functions, pseudo parameters, parameters, creation order."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any, Final

from local.provision.clients import ServiceClients
from local.provision.model import ProvisionedResource, ProvisioningError

_PARAMETER_KEYS: Final = frozenset(
    {
        "Type",
        "Default",
        "Description",
        "AllowedPattern",
        "AllowedValues",
        "ConstraintDescription",
        "MinLength",
        "MaxLength",
    }
)
_SUB_VARIABLE: Final = re.compile(r"\$\{([^}]+)\}")


@dataclass
class StackContext:
    """Everything a resource handler needs: clients, names and what exists so far."""

    clients: ServiceClients
    stack_name: str
    region: str
    account_id: str
    partition: str
    parameters: dict[str, str]
    resources: dict[str, ProvisionedResource] = field(default_factory=dict)

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        """An ARN in this stack's partition, region and account."""
        return ":".join(
            [
                "arn",
                self.partition,
                service,
                self.region if region else "",
                self.account_id if account else "",
                resource,
            ]
        )

    def generated_name(self, logical_id: str, max_length: int) -> str:
        """A name for a resource the template leaves unnamed (deterministic, so reruns reuse)."""
        return f"{self.stack_name}-{logical_id}"[:max_length]

    def pseudo(self, name: str) -> str:
        values = {
            "AWS::AccountId": self.account_id,
            "AWS::Region": self.region,
            "AWS::StackName": self.stack_name,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com.cn" if self.partition == "aws-cn" else "amazonaws.com",
        }
        if name not in values:
            raise ProvisioningError(f"unsupported pseudo parameter {name}")
        return values[name]

    # -- intrinsic functions -------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """Evaluate the intrinsic functions in a template fragment."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            functions: dict[str, Callable[[Any], Any]] = {
                "Ref": lambda name: self.ref(str(name)),
                "Fn::GetAtt": self.get_att,
                "Fn::Sub": self.sub,
                "Fn::Join": self.join,
                "Fn::Select": self.select,
            }
            if key in functions:
                return functions[key](argument)
            if key.startswith("Fn::") or key == "Condition":
                raise ProvisioningError(f"unsupported intrinsic function {key}")
        return {key: self.resolve(item) for key, item in value.items()}

    def ref(self, name: str) -> str:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            return self.resources[name].physical_id
        raise ProvisioningError(f"Ref to {name}: no such parameter, or not created yet")

    def get_att(self, argument: Any) -> str:
        if isinstance(argument, str):
            argument = argument.split(".", 1)
        if not (isinstance(argument, list) and len(argument) == 2):
            raise ProvisioningError(f"Fn::GetAtt takes [LogicalId, Attribute], got {argument!r}")
        logical_id, attribute = str(argument[0]), str(self.resolve(argument[1]))
        resource = self.resources.get(logical_id)
        if resource is None:
            raise ProvisioningError(f"GetAtt {logical_id}.{attribute}: no such resource created")
        if attribute not in resource.attributes:
            raise ProvisioningError(
                f"GetAtt {logical_id}.{attribute}: the local provisioner does not compute "
                f"{attribute} for {resource.resource_type}"
            )
        return resource.attributes[attribute]

    def sub(self, argument: Any) -> str:
        if isinstance(argument, str):
            text, variables = argument, {}
        elif isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], dict):
            text, variables = str(argument[0]), {k: self.resolve(v) for k, v in argument[1].items()}
        else:
            raise ProvisioningError(
                f"Fn::Sub takes a string or [string, mapping], got {argument!r}"
            )

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is the escape for a literal ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return self.get_att(name.split(".", 1))
            return self.ref(name)

        return _SUB_VARIABLE.sub(substitute, text)

    def join(self, argument: Any) -> str:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise ProvisioningError(f"Fn::Join takes [delimiter, list], got {argument!r}")
        items = self.resolve(argument[1])
        if not isinstance(items, list):
            raise ProvisioningError(f"Fn::Join needs a list to join, got {items!r}")
        return str(argument[0]).join(str(item) for item in items)

    def select(self, argument: Any) -> Any:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise ProvisioningError(f"Fn::Select takes [index, list], got {argument!r}")
        index, items = int(self.resolve(argument[0])), self.resolve(argument[1])
        if not isinstance(items, list) or not 0 <= index < len(items):
            raise ProvisioningError(f"Fn::Select index {index} out of range for {items!r}")
        return items[index]


def _references(value: Any) -> Iterator[str]:
    """Every name a template fragment refers to through Ref, GetAtt or Sub."""
    if isinstance(value, list):
        for item in value:
            yield from _references(item)
    elif isinstance(value, dict):
        for key, argument in value.items():
            if key == "Ref" and isinstance(argument, str):
                yield argument
            elif key == "Fn::GetAtt":
                yield (argument.split(".", 1)[0] if isinstance(argument, str) else str(argument[0]))
            elif key == "Fn::Sub":
                text = argument if isinstance(argument, str) else str(argument[0])
                local = set(argument[1]) if isinstance(argument, list) else set()
                for name in _SUB_VARIABLE.findall(text):
                    if not name.startswith("!") and name not in local:
                        yield name.split(".", 1)[0]
                if isinstance(argument, list):
                    yield from _references(argument[1])
            else:
                yield from _references(argument)


def creation_order(resources: Mapping[str, Any]) -> list[str]:
    """Logical ids ordered so that every resource comes after what it depends on."""
    graph: dict[str, set[str]] = {}
    for logical_id, definition in resources.items():
        depends_on = definition.get("DependsOn", [])
        explicit = {depends_on} if isinstance(depends_on, str) else set(depends_on)
        unknown = explicit - set(resources)
        if unknown:
            raise ProvisioningError(f"{logical_id} DependsOn unknown resource(s) {sorted(unknown)}")
        referenced = set(_references(definition.get("Properties", {}))) & set(resources)
        graph[logical_id] = explicit | referenced
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise ProvisioningError(f"circular dependency between resources {error.args[1]}") from error


def parameter_values(declared: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    """Template parameters with their defaults, overridden and validated like CloudFormation."""
    unknown = set(overrides) - set(declared)
    if unknown:
        raise ProvisioningError(f"unknown template parameter(s) {sorted(unknown)}")
    values: dict[str, str] = {}
    for name, spec in declared.items():
        extra = set(spec) - _PARAMETER_KEYS
        if extra:
            raise ProvisioningError(f"parameter {name}: unsupported key(s) {sorted(extra)}")
        if spec.get("Type") != "String":
            raise ProvisioningError(f"parameter {name}: only Type String is supported")
        if name in overrides:
            value = str(overrides[name])
        elif "Default" in spec:
            value = str(spec["Default"])
        else:
            raise ProvisioningError(f"parameter {name} has no default and no value was given")
        pattern = spec.get("AllowedPattern")
        allowed = spec.get("AllowedValues")
        if pattern is not None and not re.fullmatch(str(pattern), value):
            raise ProvisioningError(f"parameter {name}={value!r} does not match {pattern}")
        if allowed is not None and value not in [str(item) for item in allowed]:
            raise ProvisioningError(f"parameter {name}={value!r} is not one of {allowed}")
        if not int(spec.get("MinLength", 0)) <= len(value) <= int(spec.get("MaxLength", 4096)):
            raise ProvisioningError(f"parameter {name}={value!r} has the wrong length")
        values[name] = value
    return values
