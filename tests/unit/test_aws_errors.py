"""AWS error codes: ClientError codes, class names for everything else, S3's "not found"."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from chalicelib.aws_errors import error_code, is_not_found


def client_error(code: str | None) -> ClientError:
    error = {"Error": {"Code": code, "Message": "secret detail"}} if code else {}
    return ClientError(error, "GetObject")  # type: ignore[arg-type]


def test_client_errors_give_their_aws_code() -> None:
    assert error_code(client_error("ThrottlingException")) == "ThrottlingException"


def test_a_client_error_without_a_code_is_named_client_error() -> None:
    assert error_code(client_error(None)) == "ClientError"


def test_other_failures_give_their_class_name() -> None:
    assert error_code(EndpointConnectionError(endpoint_url="https://x")) == (
        "EndpointConnectionError"
    )
    assert error_code(TimeoutError()) == "TimeoutError"


@pytest.mark.parametrize("code", ["NoSuchKey", "404"])
def test_s3_not_found_is_recognised(code: str) -> None:
    assert is_not_found(client_error(code))


@pytest.mark.parametrize(
    "exc", [client_error("AccessDenied"), client_error("403"), KeyError("NoSuchKey")]
)
def test_anything_else_is_not_not_found(exc: Exception) -> None:
    assert not is_not_found(exc)
