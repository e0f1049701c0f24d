"""Which deployment the operator CLI talks to: the local stack (default) or AWS."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_OUTPUTS = Path(".local/outputs.json")
OUTPUTS_ENV = "METER_OUTPUTS"


class CliError(Exception):
    """A problem the operator can act on; printed without a traceback."""


@dataclass(frozen=True)
class Target:
    """Endpoints and resource names of one deployment, from its stack outputs."""

    outputs: dict[str, str]
    source: Path

    @classmethod
    def load(cls, path: str | None = None) -> Target:
        """Read the outputs file (default: the local stack's .local/outputs.json)."""
        chosen = Path(path or os.environ.get(OUTPUTS_ENV) or LOCAL_OUTPUTS)
        if not chosen.exists():
            if chosen == LOCAL_OUTPUTS:
                raise CliError(
                    "The local stack is not running (no .local/outputs.json): "
                    "start it with `make run`."
                )
            raise CliError(f"No outputs file at {chosen}.")
        try:
            outputs = json.loads(chosen.read_text())
        except ValueError:
            raise CliError(f"{chosen} is not valid JSON.") from None
        if not isinstance(outputs, dict):
            raise CliError(f"{chosen} must hold a JSON object of stack outputs.")
        return cls({str(k): str(v) for k, v in outputs.items()}, chosen)

    def get(self, key: str) -> str:
        value = self.outputs.get(key)
        if not value:
            raise CliError(f"{self.source} has no {key}.")
        return value

    @property
    def region(self) -> str:
        return self.outputs.get("Region") or os.environ.get("AWS_REGION") or "us-east-1"

    @property
    def endpoint_url(self) -> str | None:
        """The local AWS endpoint, or None for real AWS."""
        return self.outputs.get("AwsEndpointUrl") or None

    @property
    def api_url(self) -> str:
        return self.get("ApiGatewayUrl").rstrip("/")

    def client(self, service: str) -> Any:
        """A boto3 client for this target (dummy credentials on the local stack)."""
        import boto3

        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            kwargs.update(
                endpoint_url=self.endpoint_url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",  # noqa: S106 (moto's dummy credentials)
            )
        return boto3.client(service, **kwargs)
