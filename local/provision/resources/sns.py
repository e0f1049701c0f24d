"""SNS: topics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from local.provision.intrinsics import StackContext
from local.provision.model import JsonDict, ProvisionedResource
from local.provision.resources.base import ResourceKind, pick


def _topic(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    name = str(props.get("TopicName") or ctx.generated_name(logical_id, 256))
    attributes = pick(props, "DisplayName", "KmsMasterKeyId")
    arn = str(ctx.clients("sns").create_topic(Name=name, Attributes=attributes)["TopicArn"])
    return ProvisionedResource(
        logical_id, "AWS::SNS::Topic", arn, {"TopicArn": arn, "TopicName": name}
    )


KINDS: Final[Mapping[str, ResourceKind]] = {
    "AWS::SNS::Topic": ResourceKind(
        _topic,
        lambda c, r: c("sns").get_topic_attributes(TopicArn=r.physical_id),
        frozenset({"TopicName", "DisplayName", "KmsMasterKeyId"}),
    ),
}
