"""Emptying a bucket completely: every object version, delete marker and unfinished upload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from chalicelib.aws_errors import error_code
from deploy.errors import DeployError

BATCH: Final = 1000  # DeleteObjects takes at most 1,000 keys


def empty(s3: Any, bucket: str, say: Callable[[str], None] = print) -> int:
    """Delete everything in the bucket (versioned or not); the number of versions deleted."""
    deleted = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        entries = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for kind in ("Versions", "DeleteMarkers")
            for item in page.get(kind, [])
        ]
        for start in range(0, len(entries), BATCH):
            chunk = entries[start : start + BATCH]
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise DeployError(
                    f"cannot delete {len(errors)} object(s) of {bucket}, e.g. {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message', '')}"
                )
            deleted += len(chunk)
        if deleted:
            say(f"    {bucket}: {deleted:,} object versions deleted")
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return deleted


def delete(s3: Any, bucket: str, say: Callable[[str], None] = print) -> bool:
    """Empty and delete the bucket; False if it does not exist."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error_code(error) in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise
    empty(s3, bucket, say)
    s3.delete_bucket(Bucket=bucket)
    say(f"    {bucket}: deleted")
    return True
