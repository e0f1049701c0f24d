"""Kinesis Data Firehose: the delivery stream."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from botocore.exceptions import ClientError

from chalicelib.aws_errors import error_code
from local.provision.intrinsics import StackContext
from local.provision.model import JsonDict, ProvisionedResource
from local.provision.resources.base import ResourceKind, pick

_STREAM_SETTINGS: Final = (
    "DeliveryStreamType",
    "DeliveryStreamEncryptionConfigurationInput",
    "ExtendedS3DestinationConfiguration",
)


def _delivery_stream(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    firehose = ctx.clients("firehose")
    name = str(props.get("DeliveryStreamName") or ctx.generated_name(logical_id, 64))
    try:
        description = firehose.describe_delivery_stream(DeliveryStreamName=name)
        arn = description["DeliveryStreamDescription"]["DeliveryStreamARN"]
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        arn = firehose.create_delivery_stream(
            DeliveryStreamName=name,
            **pick(props, *_STREAM_SETTINGS),
        )["DeliveryStreamARN"]
    return ProvisionedResource(
        logical_id, "AWS::KinesisFirehose::DeliveryStream", name, {"Arn": str(arn)}
    )


KINDS: Final[Mapping[str, ResourceKind]] = {
    "AWS::KinesisFirehose::DeliveryStream": ResourceKind(
        _delivery_stream,
        lambda c, r: c("firehose").describe_delivery_stream(DeliveryStreamName=r.physical_id),
        frozenset({"DeliveryStreamName", *_STREAM_SETTINGS}),
    ),
}
