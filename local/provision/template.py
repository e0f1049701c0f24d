"""Load a CloudFormation YAML template, short-form tags expanded to their long forms."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml

from local.provision.model import JsonDict, ProvisioningError

DEFAULT_TEMPLATE: Final = Path(__file__).resolve().parents[2] / "analytics_infra" / "template.yaml"


class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader that turns the CloudFormation short-form tags into their long forms."""


def _ref(loader: yaml.SafeLoader, node: yaml.Node) -> JsonDict:
    return {"Ref": _scalar(loader, node, "!Ref")}


def _get_att(loader: yaml.SafeLoader, node: yaml.Node) -> JsonDict:
    if isinstance(node, yaml.ScalarNode):
        logical_id, _, attribute = str(loader.construct_scalar(node)).partition(".")
        return {"Fn::GetAtt": [logical_id, attribute]}
    return {"Fn::GetAtt": _sequence(loader, node, "!GetAtt")}


def _sub(loader: yaml.SafeLoader, node: yaml.Node) -> JsonDict:
    if isinstance(node, yaml.ScalarNode):
        return {"Fn::Sub": loader.construct_scalar(node)}
    return {"Fn::Sub": _sequence(loader, node, "!Sub")}


def _join(loader: yaml.SafeLoader, node: yaml.Node) -> JsonDict:
    return {"Fn::Join": _sequence(loader, node, "!Join")}


def _select(loader: yaml.SafeLoader, node: yaml.Node) -> JsonDict:
    return {"Fn::Select": _sequence(loader, node, "!Select")}


def _unsupported_tag(_loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    raise ProvisioningError(
        f"unsupported CloudFormation tag !{suffix} (line {node.start_mark.line + 1})"
    )


def _scalar(loader: yaml.SafeLoader, node: yaml.Node, tag: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise ProvisioningError(f"{tag} takes a scalar (line {node.start_mark.line + 1})")
    return str(loader.construct_scalar(node))


def _sequence(loader: yaml.SafeLoader, node: yaml.Node, tag: str) -> list[Any]:
    if not isinstance(node, yaml.SequenceNode):
        raise ProvisioningError(f"{tag} takes a list here (line {node.start_mark.line + 1})")
    return loader.construct_sequence(node, deep=True)


_TemplateLoader.add_constructor("!Ref", _ref)
_TemplateLoader.add_constructor("!GetAtt", _get_att)
_TemplateLoader.add_constructor("!Sub", _sub)
_TemplateLoader.add_constructor("!Join", _join)
_TemplateLoader.add_constructor("!Select", _select)
_TemplateLoader.add_multi_constructor("!", _unsupported_tag)


def load_template(path: Path | str = DEFAULT_TEMPLATE) -> JsonDict:
    """Parse a CloudFormation YAML template, short-form tags expanded to their long forms."""
    with Path(path).open(encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=_TemplateLoader)  # noqa: S506 (a SafeLoader subclass)
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise ProvisioningError(f"{path}: not a CloudFormation template with Resources")
    return document
