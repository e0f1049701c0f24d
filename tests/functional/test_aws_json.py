"""The lean JSON-protocol client: botocore's signatures, responses and errors, over loopback."""

from __future__ import annotations

import base64
import calendar
import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest.mock import patch

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from chalicelib.aws_json import DYNAMODB, FIREHOSE, LeanJsonClient, operation_name
from local.running import free_port, moto_server
from tests.functional.budgets.conftest import PLANS_TABLE, create_plans_table

REGION = "us-east-1"
MOMENT = datetime(2026, 11, 30, 12, 34, 56)  # naive UTC, as botocore's clock


@dataclass
class Scripted:
    """A loopback HTTP server answering from a script, remembering what it was sent."""

    url: str
    answers: queue.Queue[tuple[int, dict[str, str], bytes] | str] = field(
        default_factory=queue.Queue
    )
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    script = Scripted("")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            script.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            answer = script.answers.get_nowait() if not script.answers.empty() else "ok"
            if answer == "hang":
                time.sleep(1.0)
                return
            if answer == "close":
                self.close_connection = True
                return
            if answer == "chunked":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in (b'{"Item": ', b'{"k": {"S": "v"}}}'):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
                return
            status, headers, payload = (200, {}, b"{}") if answer == "ok" else answer
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield script
    server.shutdown()
    server.server_close()


def lean(
    url: str, *, token: str | None = None, api: Any = DYNAMODB, **options: Any
) -> LeanJsonClient:
    settings: dict[str, Any] = {
        "connect_timeout_s": 1.0,
        "read_timeout_s": 1.0,
        "max_attempts": 3,
        "sleep": lambda _: None,
        **options,
    }
    return LeanJsonClient(
        api,
        endpoint_url=url,
        region=REGION,
        credentials=Credentials("AKIDEXAMPLE", "secret", token),
        utc_now=lambda: time.gmtime(calendar.timegm(MOMENT.timetuple())),
        **settings,
    )


@pytest.mark.parametrize("token", [None, "session-token"])
def test_requests_are_signed_exactly_as_botocore_signs_them(
    scripted: Scripted, token: str | None
) -> None:
    lean(scripted.url, token=token).get_item(TableName="t", Key={"pk": {"S": "a"}})

    ((headers, body),) = scripted.received
    assert json.loads(body) == {"TableName": "t", "Key": {"pk": {"S": "a"}}}
    expected = AWSRequest(
        method="POST",
        url=scripted.url + "/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.GetItem",
        },
    )
    with patch("botocore.auth.get_current_datetime", return_value=MOMENT):
        SigV4Auth(Credentials("AKIDEXAMPLE", "secret", token), "dynamodb", REGION).add_auth(
            expected
        )
    assert headers["authorization"] == expected.headers["Authorization"]
    assert headers["x-amz-date"] == expected.headers["X-Amz-Date"]
    assert headers.get("x-amz-security-token") == token


def test_method_names_are_botocore_s() -> None:
    assert operation_name("update_item") == "UpdateItem"
    assert operation_name("put_record_batch") == "PutRecordBatch"


def test_blobs_are_sent_base64_encoded(scripted: Scripted) -> None:
    lean(scripted.url, api=FIREHOSE).put_record_batch(
        DeliveryStreamName="s", Records=[{"Data": b"\x00line\n"}]
    )
    ((headers, body),) = scripted.received
    assert headers["x-amz-target"] == "Firehose_20150804.PutRecordBatch"
    assert headers["content-type"] == "application/x-amz-json-1.1"
    assert json.loads(body)["Records"] == [{"Data": base64.b64encode(b"\x00line\n").decode()}]


def test_service_errors_are_client_errors_with_the_error_s_fields(scripted: Scripted) -> None:
    payload = {
        "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
        "message": "The conditional request failed",
        "Item": {"pk": {"S": "a"}},
    }
    scripted.answers.put((400, {}, json.dumps(payload).encode()))
    with pytest.raises(ClientError) as caught:
        lean(scripted.url).update_item(TableName="t", Key={})
    response = caught.value.response
    assert response["Error"] == {
        "Code": "ConditionalCheckFailedException",
        "Message": "The conditional request failed",
    }
    assert response["Item"] == {"pk": {"S": "a"}}
    assert caught.value.operation_name == "UpdateItem"
    assert len(scripted.received) == 1  # a refused condition is not retried


def test_throttling_and_server_errors_are_retried_then_raised(scripted: Scripted) -> None:
    throttled = json.dumps({"__type": "ProvisionedThroughputExceededException"}).encode()
    scripted.answers.put((400, {}, throttled))
    scripted.answers.put((500, {}, b"{}"))
    scripted.answers.put((200, {}, b'{"Item": {"n": {"N": "1"}}}'))
    assert lean(scripted.url).get_item(TableName="t", Key={})["Item"] == {"n": {"N": "1"}}
    assert len(scripted.received) == 3

    for _ in range(3):
        scripted.answers.put((503, {"x-amzn-ErrorType": "ServiceUnavailable:http://"}, b""))
    with pytest.raises(ClientError) as caught:
        lean(scripted.url).get_item(TableName="t", Key={})
    assert caught.value.response["Error"]["Code"] == "ServiceUnavailable"


def test_chunked_responses_are_read_whole_and_the_connection_kept(scripted: Scripted) -> None:
    client = lean(scripted.url)
    scripted.answers.put("chunked")
    assert client.get_item(TableName="t", Key={})["Item"] == {"k": {"S": "v"}}
    assert client.get_item(TableName="t", Key={})["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_a_corrupted_response_fails_its_checksum_and_is_retried(scripted: Scripted) -> None:
    scripted.answers.put((200, {"x-amz-crc32": "1"}, b'{"Item": {}}'))
    scripted.answers.put((200, {}, b'{"Item": {"ok": {"BOOL": true}}}'))
    assert lean(scripted.url).get_item(TableName="t", Key={})["Item"] == {"ok": {"BOOL": True}}


def test_a_server_that_does_not_answer_is_a_read_timeout(scripted: Scripted) -> None:
    scripted.answers.put("hang")
    client = lean(scripted.url, read_timeout_s=0.2, max_attempts=1)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        client.get_item(TableName="t", Key={})
    assert time.monotonic() - started < 0.9


def test_a_connection_closed_without_an_answer_is_retried(scripted: Scripted) -> None:
    scripted.answers.put("close")
    assert lean(scripted.url).get_item(TableName="t", Key={}) == {
        "ResponseMetadata": {"RequestId": "", "HTTPStatusCode": 200}
    }
    scripted.answers.put("close")
    with pytest.raises(ConnectionClosedError):
        lean(scripted.url, max_attempts=1).get_item(TableName="t", Key={})


def test_nothing_listening_is_an_endpoint_connection_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EndpointConnectionError):
        lean(url, max_attempts=2).get_item(TableName="t", Key={})


@pytest.fixture
def moto_dynamodb() -> Iterator[tuple[str, Any]]:
    with moto_server() as url:
        dynamodb = boto3.client(
            "dynamodb",
            region_name=REGION,
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        create_plans_table(dynamodb)
        yield url, dynamodb


def test_answers_match_botocore_s_against_moto(moto_dynamodb: tuple[str, Any]) -> None:
    url, dynamodb = moto_dynamodb
    client = lean(url)
    key = {"pk": {"S": "TENANT#a"}, "sk": {"S": "PLAN"}}
    client.put_item(TableName=PLANS_TABLE, Item={**key, "n": {"N": "1"}, "m": {"M": {}}})
    updated = client.update_item(
        TableName=PLANS_TABLE,
        Key=key,
        UpdateExpression="ADD n :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
        ReturnValues="UPDATED_NEW",
    )
    assert updated["Attributes"] == {"n": {"N": "2"}}
    mine = client.get_item(TableName=PLANS_TABLE, Key=key, ConsistentRead=True)
    theirs = dynamodb.get_item(TableName=PLANS_TABLE, Key=key, ConsistentRead=True)
    assert mine["Item"] == theirs["Item"]
    with pytest.raises(ClientError) as caught:
        client.update_item(
            TableName=PLANS_TABLE,
            Key=key,
            UpdateExpression="ADD n :one",
            ConditionExpression="n > :one",
            ExpressionAttributeValues={":one": {"N": "5"}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert caught.value.response["Item"] == theirs["Item"]


def test_https_endpoints_are_verified_and_spoken_to_over_tls(tmp_path: Any) -> None:
    import datetime as dt
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            payload = b'{"Item": {"tls": {"BOOL": true}}}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://localhost:{server.server_address[1]}"
    try:
        trusting = ssl.create_default_context(cafile=str(cert_file))
        client = lean(url, ssl_context=trusting)
        assert client.get_item(TableName="t", Key={})["Item"] == {"tls": {"BOOL": True}}
        assert client.get_item(TableName="t", Key={})["Item"] == {"tls": {"BOOL": True}}
        with pytest.raises(EndpointConnectionError):  # not signed by a CA botocore trusts
            lean(url, max_attempts=1).get_item(TableName="t", Key={})
    finally:
        server.shutdown()
        server.server_close()
