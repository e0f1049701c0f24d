"""The analytics bucket and Glue table on in-process moto, and helpers to fill and read them."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3

from chalicelib.analytics.catalog import PartitionCatalog
from chalicelib.analytics.partitions import PartitionJobConfig, PartitionResult, job
from chalicelib.analytics.state import DynamoCurationStateStore
from chalicelib.layout import split_s3_url
from chalicelib.usage import parse_timestamp
from local.provision import load_template
from tests.support.usage_events import ndjson

REGION = "us-east-1"
DATABASE = "bedrock_metering_db"
TABLE = "token_usage_logs"
CURATION_TABLE = "bedrock-metering-test-curation"


def create_catalog(bucket: str, glue: Any = None, dynamodb: Any = None) -> None:
    """The Glue database and table and the curation table, as analytics_infra/template.yaml
    defines them."""
    resources = load_template()["Resources"]
    table_input = json.loads(json.dumps(resources["UsageTable"]["Properties"]["TableInput"]))
    table_input["StorageDescriptor"]["Location"] = f"s3://{bucket}/usage/"
    glue = glue or boto3.client("glue", region_name=REGION)
    glue.create_database(DatabaseInput={"Name": DATABASE})
    glue.create_table(DatabaseName=DATABASE, TableInput=table_input)
    properties = resources["CurationStateTable"]["Properties"]
    dynamodb = dynamodb or boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName=CURATION_TABLE,
        AttributeDefinitions=properties["AttributeDefinitions"],
        KeySchema=properties["KeySchema"],
        BillingMode=properties["BillingMode"],
    )


@dataclass
class Lake:
    """Raw and fallback objects in, partitions out (through the given clients, else
    in-process moto)."""

    bucket: str
    client: Any = None
    glue_client: Any = None
    dynamodb_client: Any = None
    config: PartitionJobConfig | None = None

    def __post_init__(self) -> None:
        if self.config is None:
            self.config = PartitionJobConfig(bucket=self.bucket)

    @property
    def s3(self) -> Any:
        return self.client or boto3.client("s3", region_name=REGION)

    @property
    def glue(self) -> Any:
        return self.glue_client or boto3.client("glue", region_name=REGION)

    @property
    def catalog(self) -> PartitionCatalog:
        return PartitionCatalog(DATABASE, TABLE, client=self.glue)

    @property
    def state(self) -> DynamoCurationStateStore:
        dynamodb = self.dynamodb_client or boto3.client("dynamodb", region_name=REGION)
        return DynamoCurationStateStore(CURATION_TABLE, client=dynamodb)

    def put_raw(self, hour: datetime, events: Iterable[dict[str, Any]]) -> str:
        """A Firehose object under `raw/` for the hour the events arrived in."""
        key = (
            f"raw/{hour:%Y/%m/%d/%H}/bedrock-metering-test-usage-events-1-"
            f"{hour:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}"
        )
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=ndjson(events))
        return key

    def put_fallback(self, event: dict[str, Any]) -> str:
        """An event the recorder wrote to the fallback location (keyed by its own hour)."""
        stamp = parse_timestamp(event["timestamp"])
        key = f"fallback/{stamp:%Y/%m/%d/%H}/{event['event_id']}.json"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=ndjson([event]))
        return key

    def run(self, day: date, now: datetime | None = None, **options: Any) -> PartitionResult:
        """The partition job for `day`, by default as it would run three hours after it."""
        when = now or datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=27)
        assert self.config is not None
        return job(
            day=day,
            now=when,
            config=self.config,
            s3=self.s3,
            catalog=self.catalog,
            state=self.state,
            **options,
        )

    def location(self, day: date) -> str | None:
        """The folder the day's Glue partition points at (a key prefix), if any."""
        url = self.catalog.location(day)
        return split_s3_url(url)[1] if url else None

    def partition_keys(self, day: date) -> dict[str, str]:
        """The Parquet objects of the day's current generation (what Athena reads): key -> ETag."""
        folder = self.location(day)
        if folder is None:
            return {}
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=folder, Delimiter="/")
        return {item["Key"]: item["ETag"] for item in listing.get("Contents", [])}

    def partition_rows(self, day: date) -> list[dict[str, Any]]:
        """Every row of the day's partition, read back from its Parquet objects."""
        import pyarrow.parquet as pq  # noqa: TID251 (tests read the Parquet back)

        rows: list[dict[str, Any]] = []
        for key in sorted(self.partition_keys(day)):
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            rows.extend(pq.read_table(io.BytesIO(body)).to_pylist())
        return rows

    def glue_partitions(self) -> list[list[str]]:
        partitions = self.glue.get_partitions(DatabaseName=DATABASE, TableName=TABLE)["Partitions"]
        return sorted(p["Values"] for p in partitions)
