"""The dashboard signs in from its own origin to the local endpoint: moto's server answers the
browser's CORS preflight and its sign-in response with the page's origin allowed."""

from __future__ import annotations

import json

from werkzeug.test import Client

from local.aws_endpoint import make_app

PAGE_ORIGIN = "http://127.0.0.1:8000"
SIGN_IN = "AWSCognitoIdentityProviderService.InitiateAuth"


def test_the_preflight_and_the_sign_in_answer_allow_the_pages_origin() -> None:
    client = Client(make_app())
    preflight = client.options(
        "/",
        headers={
            "Origin": PAGE_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-amz-target",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == PAGE_ORIGIN
    allowed = {h.strip() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "x-amz-target"} <= allowed
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]

    answer = client.post(
        "/",
        data=json.dumps(
            {"AuthFlow": "USER_PASSWORD_AUTH", "ClientId": "nobody", "AuthParameters": {}}
        ),
        headers={
            "Origin": PAGE_ORIGIN,
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": SIGN_IN,
        },
    )
    # An unknown client is an error, but one the page can read: its origin is allowed.
    assert answer.status_code == 400
    assert answer.headers["Access-Control-Allow-Origin"] == PAGE_ORIGIN
    assert "__type" in json.loads(answer.get_data())
