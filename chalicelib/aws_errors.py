"""AWS failures read one way: the error code of a botocore exception, and "not found"."""

from __future__ import annotations

from botocore.exceptions import ClientError

# S3 says NoSuchKey for GetObject and a bare 404 where a response has no body (HeadObject).
NOT_FOUND_CODES = frozenset({"NoSuchKey", "404"})
# DynamoDB's answer to a write whose ConditionExpression does not hold.
CONDITION_FAILED = "ConditionalCheckFailedException"


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ("ThrottlingException"), else the exception's class
    name ("EndpointConnectionError"): short, and safe to log or record in a usage event."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def is_not_found(exc: BaseException) -> bool:
    """Whether an S3 call failed because the object does not exist."""
    return isinstance(exc, ClientError) and error_code(exc) in NOT_FOUND_CODES
