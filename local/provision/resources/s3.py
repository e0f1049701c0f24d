"""S3: the bucket with its settings, and its bucket policy."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from botocore.exceptions import ClientError

from chalicelib.aws_errors import error_code
from local.provision.clients import ServiceClients
from local.provision.intrinsics import StackContext
from local.provision.model import JsonDict, ProvisionedResource, ProvisioningError
from local.provision.resources.base import ResourceKind, pick


def _lifecycle_rule(rule: Mapping[str, Any]) -> JsonDict:
    """A CloudFormation lifecycle rule in the shape of the S3 API."""
    known = {
        "Id",
        "Status",
        "Prefix",
        "ExpirationInDays",
        "NoncurrentVersionExpiration",
        "AbortIncompleteMultipartUpload",
    }
    extra = set(rule) - known
    if extra:
        raise ProvisioningError(
            f"lifecycle rule {rule.get('Id')}: unsupported key(s) {sorted(extra)}"
        )
    converted: JsonDict = {"Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "Id" in rule:
        converted["ID"] = rule["Id"]
    if "ExpirationInDays" in rule:
        converted["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    converted.update(pick(rule, "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload"))
    return converted


def _encryption_rule(rule: Mapping[str, Any]) -> JsonDict:
    """A CloudFormation default-encryption rule in the shape of the S3 API."""
    extra = set(rule) - {"ServerSideEncryptionByDefault", "BucketKeyEnabled"}
    if extra:
        raise ProvisioningError(f"bucket encryption rule: unsupported key(s) {sorted(extra)}")
    converted = pick(rule, "BucketKeyEnabled")
    if "ServerSideEncryptionByDefault" in rule:
        converted["ApplyServerSideEncryptionByDefault"] = rule["ServerSideEncryptionByDefault"]
    return converted


def _bucket(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    s3 = ctx.clients("s3")
    name = str(props.get("BucketName") or ctx.generated_name(logical_id, 63).lower())
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as error:
        if error_code(error) not in {"404", "NoSuchBucket", "NotFound"}:
            raise
        location = {}
        if ctx.region != "us-east-1":
            location = {"CreateBucketConfiguration": {"LocationConstraint": ctx.region}}
        s3.create_bucket(Bucket=name, **location)
    if "BucketEncryption" in props:
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    _encryption_rule(rule)
                    for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                ]
            },
        )
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
        )
    if "OwnershipControls" in props:
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=props["OwnershipControls"])
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(
            Bucket=name, VersioningConfiguration=props["VersioningConfiguration"]
        )
    if "LifecycleConfiguration" in props:
        rules = [_lifecycle_rule(rule) for rule in props["LifecycleConfiguration"]["Rules"]]
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
    return ProvisionedResource(
        logical_id,
        "AWS::S3::Bucket",
        name,
        {
            "Arn": ctx.arn("s3", name, region=False, account=False),
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{ctx.region}.amazonaws.com",
        },
    )


def _requires_tls(statement: Mapping[str, Any]) -> bool:
    condition = statement.get("Condition", {}).get("Bool", {})
    return str(condition.get("aws:SecureTransport", "")).lower() == "false"


def _probe_bucket_policy(clients: ServiceClients, resource: ProvisionedResource) -> Any:
    if clients.plain_http:
        # Locally the only statement (deny without TLS) is left out; the bucket is what exists.
        return clients("s3").head_bucket(Bucket=resource.physical_id)
    return clients("s3").get_bucket_policy(Bucket=resource.physical_id)


def _bucket_policy(ctx: StackContext, logical_id: str, props: JsonDict) -> ProvisionedResource:
    bucket = str(props["Bucket"])
    document = dict(props["PolicyDocument"])
    if ctx.clients.plain_http:
        # The local endpoint speaks plain HTTP on loopback, and moto enforces bucket policies:
        # a deny-unless-TLS statement would refuse every read there. It still applies on AWS.
        document["Statement"] = [s for s in document["Statement"] if not _requires_tls(s)]
    if document["Statement"]:
        ctx.clients("s3").put_bucket_policy(Bucket=bucket, Policy=json.dumps(document))
    return ProvisionedResource(logical_id, "AWS::S3::BucketPolicy", bucket)


KINDS: Final[Mapping[str, ResourceKind]] = {
    "AWS::S3::Bucket": ResourceKind(
        _bucket,
        lambda c, r: c("s3").head_bucket(Bucket=r.physical_id),
        frozenset(
            {
                "BucketName",
                "BucketEncryption",
                "PublicAccessBlockConfiguration",
                "OwnershipControls",
                "VersioningConfiguration",
                "LifecycleConfiguration",
            }
        ),
    ),
    "AWS::S3::BucketPolicy": ResourceKind(
        _bucket_policy,
        _probe_bucket_policy,
        frozenset({"Bucket", "PolicyDocument"}),
    ),
}
