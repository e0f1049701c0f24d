"""Application inference profile ARNs resolved to the base model they route to, for pricing.

An application inference profile ARN names no model, so the price table cannot read one from
it. At configuration time each such ARN is looked up: first in the stage's static aliases
(MODEL_ALIASES, which also serves offline use), then with Bedrock's GetInferenceProfile.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import ConfigurationError
from chalicelib.pricing import UnknownModelError, base_model_id, is_application_profile


class ProfileLookup(Protocol):
    """Finds the model ARNs an inference profile routes to."""

    def model_arns(self, profile_arn: str) -> list[str]: ...


class BedrockProfileLookup:
    """Bedrock control plane (`bedrock`, not `bedrock-runtime`): GetInferenceProfile."""

    def __init__(self, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("bedrock")
        self._client = client

    def model_arns(self, profile_arn: str) -> list[str]:
        """The profile's model ARNs; UnknownModelError if Bedrock cannot say."""
        try:
            response = self._client.get_inference_profile(inferenceProfileIdentifier=profile_arn)
        except (ClientError, BotoCoreError) as exc:
            raise UnknownModelError(
                f"cannot resolve application inference profile {profile_arn}: "
                f"GetInferenceProfile failed ({type(exc).__name__}); "
                "add it to MODEL_ALIASES or grant bedrock:GetInferenceProfile"
            ) from exc
        return [str(model["modelArn"]) for model in response.get("models", [])]


class StaticProfileLookup:
    """In-memory lookup for tests and offline use."""

    def __init__(self, profiles: Mapping[str, list[str]]) -> None:
        self._profiles = dict(profiles)
        self.calls: list[str] = []

    def model_arns(self, profile_arn: str) -> list[str]:
        self.calls.append(profile_arn)
        return list(self._profiles.get(profile_arn, []))


def parse_aliases(text: str, variable: str = "MODEL_ALIASES") -> tuple[tuple[str, str], ...]:
    """Read a JSON object {profile ARN: model id}; ConfigurationError naming the variable."""
    if not text.strip():
        return ()
    try:
        document = json.loads(text)
    except ValueError:
        raise ConfigurationError(f"{variable} must be a JSON object") from None
    if not isinstance(document, dict) or not all(
        isinstance(key, str) and isinstance(value, str) and value for key, value in document.items()
    ):
        raise ConfigurationError(f"{variable} must map profile ARNs to model ids (strings)")
    return tuple(sorted(document.items()))


def resolve_aliases(
    model_ids: Iterable[str],
    static: Mapping[str, str],
    lookup: Callable[[], ProfileLookup],
) -> dict[str, str]:
    """Aliases for every application profile among `model_ids` (static ones win).

    `lookup` is called only if some profile is not covered statically, so stages that use
    plain model ids never build a Bedrock control-plane client.
    """
    aliases = dict(static)
    for model_id in model_ids:
        if not is_application_profile(model_id) or model_id in aliases:
            continue
        arns = lookup().model_arns(model_id)
        bases = {base_model_id(arn) for arn in arns}
        if len(bases) != 1:
            raise UnknownModelError(
                f"application inference profile {model_id} routes to "
                f"{sorted(bases) or 'no model'}; expected exactly one base model"
            )
        aliases[model_id] = bases.pop()
    return aliases
