"""Which deployment the operator CLI talks to: the local stack (default) or AWS."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chalicelib.settings import Settings

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

    def settings(self) -> Settings:
        """The deployment's settings as the app would read them, for the clients meterctl uses.

        The outputs name the resources and give the region; with `AwsEndpointUrl` (the local
        stack) clients go to that endpoint with dummy credentials and SQL runs on DuckDB, else
        on Athena. The operator's environment supplies the rest (CURATED_PREFIX, ...), as a
        stage's configuration would.
        """
        from chalicelib.errors import ConfigurationError
        from chalicelib.settings import (
            AWS_ENDPOINT_URL,
            AWS_REGION,
            ENGINE_ATHENA,
            ENGINE_DUCKDB,
            QUERY_ENGINE,
            Settings,
            env_from_outputs,
        )

        env = {
            **os.environ,
            **env_from_outputs(self.outputs),
            AWS_REGION: self.region,
            AWS_ENDPOINT_URL: self.endpoint_url or "",
            QUERY_ENGINE: ENGINE_DUCKDB if self.endpoint_url else ENGINE_ATHENA,
        }
        try:
            return Settings.from_env(env)
        except ConfigurationError as exc:
            raise CliError(f"{exc.message} (with the outputs in {self.source})") from None

    def client(self, service: str) -> Any:
        """A boto3 client for this target, as chalicelib.wiring builds it."""
        from chalicelib import wiring

        return wiring.client(service, self.settings())
