"""boto3 sessions for a stage: AWS as the runtime configures it, or the local stack's endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3

from chalicelib.settings import Settings

# moto accepts any credentials; explicit ones keep a developer's own profile out of local calls.
LOCAL_ACCESS_KEY_ID = "testing"
LOCAL_SECRET_ACCESS_KEY = "testing"  # noqa: S105 (moto's dummy credentials, not a secret)

# Position of `endpoint_url` among boto3's Session.client parameters after `service_name`.
_ENDPOINT_URL_POSITION = 4


class LocalEndpointSession(boto3.session.Session):  # type: ignore[misc]  # boto3 is untyped
    """A session with dummy credentials whose clients go to local endpoints.

    Every client and resource it builds (its own, and those awswrangler builds from it) goes
    to `endpoint_url`, or to the service's entry in `service_endpoints`, unless the caller
    names another endpoint. botocore's own session-level `endpoint_url` setting cannot do this:
    client creation replaces it with the endpoint it finds in the environment.
    """

    def __init__(
        self,
        *,
        endpoint_url: str,
        region_name: str,
        service_endpoints: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            aws_access_key_id=LOCAL_ACCESS_KEY_ID,
            aws_secret_access_key=LOCAL_SECRET_ACCESS_KEY,
            region_name=region_name,
        )
        self.endpoint_url = endpoint_url
        self.service_endpoints = dict(service_endpoints or {})

    def endpoint_for(self, service_name: str) -> str:
        """Where this session's clients of `service_name` go."""
        return self.service_endpoints.get(service_name) or self.endpoint_url

    def client(self, service_name: str, *args: Any, **kwargs: Any) -> Any:
        """boto3's `client`, with this session's endpoint when none is given."""
        if len(args) <= _ENDPOINT_URL_POSITION and kwargs.get("endpoint_url") is None:
            kwargs["endpoint_url"] = self.endpoint_for(service_name)
        return super().client(service_name, *args, **kwargs)


def session_for(settings: Settings) -> Any:
    """A new session for the stage: the local stack's endpoints with dummy credentials when
    `AWS_ENDPOINT_URL` is set, else AWS with the runtime's credentials, in the stage's region."""
    if not settings.aws_endpoint_url:
        return boto3.session.Session(region_name=settings.region)
    service_endpoints = {}
    if settings.bedrock_endpoint_url:
        service_endpoints["bedrock-runtime"] = settings.bedrock_endpoint_url
    return LocalEndpointSession(
        endpoint_url=settings.aws_endpoint_url,
        region_name=settings.region,
        service_endpoints=service_endpoints,
    )
