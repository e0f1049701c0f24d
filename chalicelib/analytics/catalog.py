"""The Glue partitions of the curated table: where each day's files are, and the switch to a
new generation (one UpdatePartition: Athena plans a query from the location it reads then)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import date
from typing import Any

from chalicelib.aws_errors import error_code
from chalicelib.layout import partition_values


@dataclass(frozen=True)
class Partition:
    """One partition as Glue has it: its `year`/`month`/`day` values and its location URL."""

    values: tuple[str, ...]
    location: str


class PartitionCatalog:
    """Reads and moves the partitions of one Glue table (client injected)."""

    def __init__(self, database: str, table: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("glue")
        self._client = client
        self._database = database
        self._table = table
        self._storage: dict[str, Any] | None = None

    def location(self, day: date) -> str | None:
        """The day's partition location, or None if the partition does not exist."""
        from botocore.exceptions import ClientError

        try:
            partition = self._client.get_partition(
                DatabaseName=self._database,
                TableName=self._table,
                PartitionValues=list(partition_values(day)),
            )["Partition"]
        except ClientError as exc:
            if error_code(exc) == "EntityNotFoundException":
                return None
            raise
        return str(partition.get("StorageDescriptor", {}).get("Location", "")) or None

    def switch(self, day: date, location: str) -> None:
        """Point the day's partition at `location` (an s3:// folder URL), creating it if need be.

        The partition's storage descriptor is the table's (columns, formats, SerDe) with the
        new location, so a partition never disagrees with the table about its columns.
        """
        from botocore.exceptions import ClientError

        values = list(partition_values(day))
        partition_input = {"Values": values, "StorageDescriptor": self._descriptor(location)}
        try:
            self._client.update_partition(
                DatabaseName=self._database,
                TableName=self._table,
                PartitionValueList=values,
                PartitionInput=partition_input,
            )
            return
        except ClientError as exc:
            if error_code(exc) != "EntityNotFoundException":
                raise
        try:
            self._client.create_partition(
                DatabaseName=self._database, TableName=self._table, PartitionInput=partition_input
            )
        except ClientError as exc:
            if error_code(exc) != "AlreadyExistsException":
                raise
            self._client.update_partition(
                DatabaseName=self._database,
                TableName=self._table,
                PartitionValueList=values,
                PartitionInput=partition_input,
            )

    def partitions(self) -> list[Partition]:
        """Every partition of the table with its location, sorted by values."""
        found: list[Partition] = []
        paginator = self._client.get_paginator("get_partitions")
        for page in paginator.paginate(DatabaseName=self._database, TableName=self._table):
            for item in page.get("Partitions", []):
                location = item.get("StorageDescriptor", {}).get("Location", "")
                found.append(Partition(tuple(item["Values"]), str(location)))
        return sorted(found, key=lambda p: p.values)

    def _descriptor(self, location: str) -> dict[str, Any]:
        if self._storage is None:
            table = self._client.get_table(DatabaseName=self._database, Name=self._table)["Table"]
            self._storage = dict(table["StorageDescriptor"])
        descriptor = copy.deepcopy(self._storage)
        descriptor["Location"] = location
        return descriptor
