"""CloudFormation template plumbing: YAML short forms, intrinsic builders, a value resolver."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

import yaml

from deploy.errors import DeployError

Template = dict[str, Any]
SUB_VARIABLE: Final = re.compile(r"\$\{([^}!][^}]*)\}")
PSEUDO: Final = ("AWS::Partition", "AWS::Region", "AWS::AccountId", "AWS::StackName")


class _Loader(yaml.SafeLoader):
    """Reads `!Ref x`, `!GetAtt a.b`, `!Sub ...` and the other `!Fn` tags as their long forms."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _tag)


def load(path: Path) -> Template:
    """A YAML or JSON template, short-form tags in their long forms."""
    document = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise DeployError(f"{path}: not a CloudFormation template with Resources")
    return document


def dump(template: Mapping[str, Any], path: Path) -> int:
    """Write the template as compact JSON (CloudFormation's inline limit is 51,200 bytes)."""
    text = json.dumps(template, separators=(",", ":"), sort_keys=False)
    path.write_text(text + "\n", encoding="utf-8")
    return len(text) + 1


# ------------------------------------------------------------------------ intrinsic builders


def ref(name: str) -> dict[str, Any]:
    return {"Ref": name}


def get_att(logical_id: str, attribute: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def import_value(export: str) -> dict[str, Any]:
    return {"Fn::ImportValue": export}


def sub(text: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`Fn::Sub`, in its one-argument form when no variables are given."""
    if not variables:
        return {"Fn::Sub": text}
    return {"Fn::Sub": [text, dict(variables)]}


def references(value: Any) -> Iterator[tuple[str, str | None]]:
    """(logical id, attribute or None) of each Ref, GetAtt and Sub variable of a fragment."""
    if isinstance(value, list):
        for item in value:
            yield from references(item)
    elif isinstance(value, dict):
        for key, argument in value.items():
            if key == "Ref" and isinstance(argument, str):
                yield argument, None
            elif key == "Fn::GetAtt":
                parts = argument.split(".", 1) if isinstance(argument, str) else argument
                yield str(parts[0]), str(parts[1])
            elif key == "Fn::Sub":
                text = argument if isinstance(argument, str) else argument[0]
                local = set(argument[1]) if isinstance(argument, list) else set()
                for name in SUB_VARIABLE.findall(text):
                    if name not in local:
                        head, _, attribute = name.partition(".")
                        yield head, attribute or None
                if isinstance(argument, list):
                    yield from references(argument[1])
            else:
                yield from references(argument)


def rewrite(value: Any, replace: Callable[[str, str | None], Any | None]) -> Any:
    """A copy of a fragment where each Ref/GetAtt/Sub variable `replace` maps is replaced.

    `replace(logical_id, attribute)` returns the new value (any intrinsic) or None to keep
    the reference. Sub variables become entries of the Sub's variable map.
    """
    if isinstance(value, list):
        return [rewrite(item, replace) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, argument),) = value.items()
        if key == "Ref" and isinstance(argument, str):
            new = replace(argument, None)
            return copy.deepcopy(value) if new is None else new
        if key == "Fn::GetAtt":
            parts = argument.split(".", 1) if isinstance(argument, str) else argument
            new = replace(str(parts[0]), str(parts[1]))
            return copy.deepcopy(value) if new is None else new
        if key == "Fn::Sub":
            return _rewrite_sub(argument, replace)
    return {key: rewrite(item, replace) for key, item in value.items()}


def _rewrite_sub(argument: Any, replace: Callable[[str, str | None], Any | None]) -> Any:
    text = argument if isinstance(argument, str) else str(argument[0])
    variables = (
        {k: rewrite(v, replace) for k, v in argument[1].items()}
        if isinstance(argument, list)
        else {}
    )

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in variables or name.startswith("AWS::"):
            return match.group(0)
        head, _, attribute = name.partition(".")
        new = replace(head, attribute or None)
        if new is None:
            return match.group(0)
        variable = head + attribute
        variables[variable] = new
        return "${" + variable + "}"

    text = SUB_VARIABLE.sub(substitute, text)
    return sub(text, variables)


# ------------------------------------------------------------------------ concrete values


@dataclass(frozen=True)
class Resolver:
    """Evaluates the intrinsics this tooling renders, given concrete values.

    Used to write concrete IAM policies for `chalice deploy`, and by tests to read rendered
    templates. Knows pseudo parameters, ImportValue, Ref/GetAtt of given names, Sub and Join.
    """

    pseudo: Mapping[str, str]
    exports: Mapping[str, str] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)  # Ref / "Id.Attribute" -> value

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            function = self._functions.get(key)
            if function is not None:
                return function(self, argument)
        return {key: self(item) for key, item in value.items()}

    def _ref(self, argument: Any) -> str:
        return self._name(str(argument))

    def _get_att(self, argument: Any) -> str:
        parts = argument.split(".", 1) if isinstance(argument, str) else argument
        return self._name(f"{parts[0]}.{parts[1]}")

    def _import_value(self, argument: Any) -> str:
        export = str(self(argument))
        if export not in self.exports:
            raise DeployError(f"no export named {export}")
        return self.exports[export]

    def _join(self, argument: Any) -> str:
        return str(argument[0]).join(str(self(item)) for item in argument[1])

    def _name(self, name: str) -> str:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.names:
            return self.names[name]
        raise DeployError(f"cannot resolve {name}")

    def _sub(self, argument: Any) -> str:
        text = argument if isinstance(argument, str) else str(argument[0])
        variables = (
            {k: str(self(v)) for k, v in argument[1].items()} if isinstance(argument, list) else {}
        )

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            return variables[name] if name in variables else self._name(name)

        return SUB_VARIABLE.sub(substitute, text).replace("${!", "${")

    _functions: ClassVar[dict[str, Callable[[Resolver, Any], Any]]] = {
        "Ref": _ref,
        "Fn::GetAtt": _get_att,
        "Fn::ImportValue": _import_value,
        "Fn::Sub": _sub,
        "Fn::Join": _join,
    }
