"""AWS clients that fail on purpose, for the paths that must survive a failed write."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import ClientError

from tests.support.tokens import REGION


class SettleFailingClient:
    """A DynamoDB client on moto whose settle writes (REMOVE of a reservation) fail."""

    def __init__(self) -> None:
        self._client = boto3.client("dynamodb", region_name=REGION)
        self.failed = 0

    def update_item(self, **kwargs: Any) -> Any:
        if kwargs["UpdateExpression"].startswith("REMOVE"):
            self.failed += 1
            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}
            raise ClientError(error, "UpdateItem")
        return self._client.update_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
