"""boto3 clients for provisioning: one per service, on one session, region and endpoint."""

from __future__ import annotations

import os
from typing import Any


class ServiceClients:
    """One boto3 client per service, all on the same session, region and endpoint."""

    def __init__(self, session: Any, region: str, endpoint_url: str | None) -> None:
        self._session = session
        self._region = region
        self._endpoint_url = endpoint_url
        self._cache: dict[str, Any] = {}

    @property
    def plain_http(self) -> bool:
        """Whether requests reach the endpoint without TLS (the local moto server)."""
        endpoint = self._endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")
        return endpoint.startswith("http://")

    def __call__(self, service: str) -> Any:
        if service not in self._cache:
            self._cache[service] = self._session.client(
                service, region_name=self._region, endpoint_url=self._endpoint_url
            )
        return self._cache[service]
