"""Load a CloudFormation YAML template with cfn-lint's decoder, short-form tags in long form."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from cfnlint.decode import cfn_yaml

from local.provision.model import JsonDict, ProvisioningError

DEFAULT_TEMPLATE: Final = Path(__file__).resolve().parents[2] / "analytics_infra" / "template.yaml"

# The short-form tags the interpreter evaluates, by the long-form key cfn-lint gives them,
# and the YAML node each takes: a scalar (str) or a sequence (list). cfn-lint turns the
# scalar form of !GetAtt ("Name.Attribute") into a list itself.
_SHORT_FORMS: Final[Mapping[str, tuple[type, ...]]] = {
    "Ref": (str,),
    "Fn::GetAtt": (list,),
    "Fn::Sub": (str, list),
    "Fn::Join": (list,),
    "Fn::Select": (list,),
}


def load_template(path: Path | str = DEFAULT_TEMPLATE) -> JsonDict:
    """Parse a CloudFormation YAML template, short-form tags expanded to their long forms."""
    document = _plain(cfn_yaml.load(str(path)))
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise ProvisioningError(f"{path}: not a CloudFormation template with Resources")
    return document


def _plain(node: Any) -> Any:
    """A decoded node as plain dicts, lists and strs, with its short-form tags checked.

    cfn-lint returns str/dict/list subclasses that carry source marks; they neither copy nor
    pickle, so callers get plain values. The walk is also where an unsupported tag is caught:
    cfn-lint expands every `!Tag` it meets.
    """
    if isinstance(node, dict):
        if _is_short_form(node):
            _check_short_form(node)
        return {_plain(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if isinstance(node, str):
        return str(node)
    return node


def _is_short_form(node: Mapping[Any, Any]) -> bool:
    # cfn-lint gives a tag's one key as a plain str, and keys written in the YAML as its
    # marked str subclass: that tells `!Ref X` from `{Ref: X}` written out.
    return len(node) == 1 and type(next(iter(node))) is str


def _check_short_form(node: Mapping[str, Any]) -> None:
    ((function, argument),) = node.items()
    tag = "!" + function.removeprefix("Fn::")
    # The tag's mapping carries the tag node's start mark (0-based lines).
    line = node.start_mark.line + 1  # type: ignore[attr-defined]
    takes = _SHORT_FORMS.get(function)
    if takes is None:
        raise ProvisioningError(f"unsupported CloudFormation tag {tag} (line {line})")
    if not isinstance(argument, takes):
        shape = "a scalar" if takes == (str,) else "a list here"
        raise ProvisioningError(f"{tag} takes {shape} (line {line})")
