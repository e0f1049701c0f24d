"""The local AWS endpoint serves moto and keeps DynamoDB's conditional writes atomic."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from werkzeug.serving import make_server

from local.aws_endpoint import make_app

TABLE = "endpoint-test"


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = make_server("127.0.0.1", 0, make_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _client(endpoint: str, service: str) -> Any:
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(max_pool_connections=64, retries={"total_max_attempts": 1}),
    )


def test_concurrent_conditional_increments_never_pass_the_limit(endpoint: str) -> None:
    dynamodb = _client(endpoint, "dynamodb")
    dynamodb.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    limit = 25

    def take_one(_: int) -> bool:
        try:
            dynamodb.update_item(
                TableName=TABLE,
                Key={"pk": {"S": "counter"}},
                UpdateExpression="ADD n :one",
                ConditionExpression="attribute_not_exists(n) OR n < :limit",
                ExpressionAttributeValues={":one": {"N": "1"}, ":limit": {"N": str(limit)}},
            )
        except dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    with ThreadPoolExecutor(max_workers=32) as pool:
        granted = sum(pool.map(take_one, range(200)))

    item = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "counter"}})["Item"]
    assert granted == limit
    assert item["n"]["N"] == str(limit)


def test_other_services_still_answer(endpoint: str) -> None:
    s3 = _client(endpoint, "s3")
    s3.create_bucket(Bucket="endpoint-test")
    s3.put_object(Bucket="endpoint-test", Key="k", Body=b"v")
    assert s3.get_object(Bucket="endpoint-test", Key="k")["Body"].read() == b"v"
