"""The chat path on the real local stack: reference CLI steps, exact metering, refusals."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from chalicelib.pricing import load_price_table
from chalicelib.settings import DEFAULT_MODEL_ID
from chalicelib.usage import TokenUsage
from local.running import PASSWORD, RunningStack

pytestmark = pytest.mark.e2e


def aws(stack: RunningStack, *args: str) -> dict[str, object]:
    """Run the AWS CLI against the local endpoint, exactly as the README shows."""
    result = subprocess.run(
        ["aws", *args, "--output", "json"],
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout) if result.stdout.strip() else {}


def test_reference_cli_steps_give_a_token_and_curl_gets_a_model_answer(
    local_stack: RunningStack,
) -> None:
    pool_id = local_stack.outputs["UserPoolId"]
    aws(
        local_stack,
        "cognito-idp", "admin-create-user",
        "--user-pool-id", pool_id,
        "--username", "tenant1-user1",
        "--user-attributes",
        "Name=email,Value=user1@example.com", "Name=custom:tenant_id,Value=tenant-001",
        "--temporary-password", "Temp-Passw0rd!",
        "--message-action", "SUPPRESS",
    )  # fmt: skip
    aws(
        local_stack,
        "cognito-idp", "admin-set-user-password",
        "--user-pool-id", pool_id,
        "--username", "tenant1-user1",
        "--password", PASSWORD,
        "--permanent",
    )  # fmt: skip
    auth = aws(
        local_stack,
        "cognito-idp", "initiate-auth",
        "--client-id", local_stack.outputs["UserPoolClientId"],
        "--auth-flow", "USER_PASSWORD_AUTH",
        "--auth-parameters", f"USERNAME=tenant1-user1,PASSWORD={PASSWORD}",
    )  # fmt: skip
    id_token = auth["AuthenticationResult"]["IdToken"]  # type: ignore[index]

    curl = subprocess.run(
        [
            "curl", "-sS", "-X", "POST",
            local_stack.outputs["ApiGatewayUrl"].rstrip("/") + "/bedrock/chat",
            "-H", f"Authorization: Bearer {id_token}",
            "-H", "Content-Type: application/json",
            "-d", json.dumps({"prompt": "Please explain about AWS Lambda.", "max_tokens": 48}),
            "-w", "\n%{http_code}",
        ],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    body, status = curl.stdout.rsplit("\n", 1)
    assert status == "200"
    answer = json.loads(body)["response"]
    assert isinstance(answer, str)
    assert answer.strip()


def test_n_chat_calls_make_exactly_n_events_with_the_models_token_counts(
    local_stack: RunningStack,
) -> None:
    token = local_stack.create_user("tenant-count", "counter")
    before = len(local_stack.model_calls())
    request_ids = []
    for prompt in ("Name a color.", "What is 2+2?", "Say hello."):
        status, body, headers = local_stack.request(
            "POST", "/bedrock/chat", token, {"prompt": prompt, "max_tokens": 24}
        )
        assert status == 200, body
        request_ids.append(headers["X-Request-Id"])
    served = local_stack.model_calls()[before:]

    events = sorted(
        (e for e in local_stack.raw_events() if e["tenant_id"] == "tenant-count"),
        key=lambda e: e["timestamp"],
    )
    assert [e["event_id"] for e in events] == request_ids
    assert len(served) == 3
    for event, call in zip(events, served, strict=True):
        assert event["status"] == "ok"
        assert (event["input_tokens"], event["output_tokens"], event["total_tokens"]) == (
            call["inputTokens"],
            call["outputTokens"],
            call["totalTokens"],
        )
        assert 0 < event["output_tokens"] <= 24
        assert event["cost_usd"] != "0"


def _segment(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_forged_malformed_and_missing_tokens_get_401(local_stack: RunningStack) -> None:
    pool_id = local_stack.outputs["UserPoolId"]
    claims = {
        "sub": "intruder",
        "aud": local_stack.outputs["UserPoolClientId"],
        "iss": f"https://cognito-idp.us-east-1.amazonaws.com/{pool_id}",
        "token_use": "id",
        "custom:tenant_id": "tenant-victim",
        "exp": int(time.time()) + 600,
    }
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = {
        "alg none": f"{_segment({'alg': 'none', 'kid': 'dummy'})}.{_segment(claims)}.",
        "foreign key": jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": "dummy"}),
        "malformed": "garbage",
    }
    for name, token in forged.items():
        status, body, _ = local_stack.request("POST", "/bedrock/chat", token, {"prompt": "hi"})
        assert status == 401, (name, body)
    status, _, _ = local_stack.request("POST", "/bedrock/chat", None, {"prompt": "hi"})
    assert status == 401
    assert not [e for e in local_stack.raw_events() if e["tenant_id"] == "tenant-victim"]


def test_valid_token_without_a_tenant_gets_403(local_stack: RunningStack) -> None:
    cognito = local_stack.client("cognito-idp")
    pool_id = local_stack.outputs["UserPoolId"]
    cognito.admin_create_user(
        UserPoolId=pool_id,
        Username="no-tenant",
        TemporaryPassword=PASSWORD,
        MessageAction="SUPPRESS",
    )
    cognito.admin_set_user_password(
        UserPoolId=pool_id, Username="no-tenant", Password=PASSWORD, Permanent=True
    )
    token = local_stack.meterctl(
        "login", "--username", "no-tenant", "--password", PASSWORD
    ).stdout.strip()
    status, body, _ = local_stack.request("POST", "/bedrock/chat", token, {"prompt": "hi"})
    assert status == 403, body


def test_bad_input_gets_400_naming_the_problem(local_stack: RunningStack) -> None:
    token = local_stack.create_user("tenant-bad-input", "sloppy")
    status, body, _ = local_stack.request("POST", "/bedrock/chat", token, b"{not json")
    assert (status, "not valid JSON" in body["Message"]) == (400, True)
    status, body, _ = local_stack.request(
        "POST", "/bedrock/chat", token, {"prompt": "hi", "max_tokens": 100000}
    )
    assert (status, "max_tokens" in body["Message"]) == (400, True)
    assert not [e for e in local_stack.raw_events() if e["tenant_id"] == "tenant-bad-input"]


def test_model_throttling_gives_429_with_retry_after_and_an_error_event(
    local_stack: RunningStack,
) -> None:
    token = local_stack.create_user("tenant-throttled", "hasty")
    # One: a throttled call is answered 429 at once; the tenant retries after Retry-After.
    local_stack.set_faults(throttle=1)
    status, body, headers = local_stack.request(
        "POST", "/bedrock/chat", token, {"prompt": "hi", "max_tokens": 8}
    )
    assert status == 429, body
    assert int(headers["Retry-After"]) > 0
    (event,) = [e for e in local_stack.raw_events() if e["tenant_id"] == "tenant-throttled"]
    assert (event["status"], event["error_code"], event["event_id"]) == (
        "error",
        "ThrottlingException",
        headers["X-Request-Id"],
    )


def test_a_retry_with_the_same_idempotency_key_gets_the_first_answer_billed_once(
    local_stack: RunningStack,
) -> None:
    token = local_stack.create_user("tenant-retrying", "retrier")
    body = {"prompt": "Say hi.", "max_tokens": 8}
    key = {"Idempotency-Key": "order-2026-0001"}
    before = len(local_stack.model_calls())

    first = local_stack.request("POST", "/bedrock/chat", token, body, key)
    again = local_stack.request("POST", "/bedrock/chat", token, body, key)

    assert first[0] == again[0] == 200
    assert again[1] == first[1]
    assert again[2]["X-Request-Id"] == first[2]["X-Request-Id"]
    assert again[2]["Idempotent-Replayed"] == "true"
    assert len(local_stack.model_calls()) == before + 1
    events = [e for e in local_stack.raw_events() if e["tenant_id"] == "tenant-retrying"]
    assert [e["event_id"] for e in events] == [first[2]["X-Request-Id"]]
    other = local_stack.request("POST", "/bedrock/chat", token, {"prompt": "Else."}, key)
    assert other[0] == 422


NOVA_MICRO = "amazon.nova-micro-v1:0"  # offered by the local stage (ALLOWED_MODELS)


def event_with_id(stack: RunningStack, event_id: str) -> dict[str, Any]:
    (event,) = [e for e in stack.raw_events() if e["event_id"] == event_id]
    return event


def metrics_line(stack: RunningStack, event_id: str) -> dict[str, Any]:
    """The call's EMF line in the API's log (chalice local's stdout)."""
    log = Path(stack.stack.config.state_dir) / "logs" / "api.log"
    for _ in range(50):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"kind":"model_call"' in line and event_id in line:
                return dict(json.loads(line))
        time.sleep(0.1)
    raise AssertionError(f"no metrics line for {event_id}")


def test_a_tenant_chooses_a_model_its_plan_allows_and_a_conversation(
    local_stack: RunningStack, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    tenant = f"tenant-models-{run}"
    admin = local_stack.create_user(f"provider-{run}", f"ops-{run}", admin=True)
    user = local_stack.create_user(tenant, f"chooser-{run}")
    local_stack.meterctl(
        "plan", "set", "--tenant", tenant,
        "--allow-model", DEFAULT_MODEL_ID, "--allow-model", NOVA_MICRO, "--token", admin,
    )  # fmt: skip
    before = len(local_stack.model_calls())

    status, body, headers = local_stack.request(
        "POST",
        "/bedrock/chat",
        user,
        {"prompt": "Name a colour.", "model": NOVA_MICRO, "max_tokens": 16},
    )

    assert status == 200, body
    assert body["response"].strip()
    (served,) = local_stack.model_calls()[before:]
    assert served["modelId"] == NOVA_MICRO
    event = event_with_id(local_stack, headers["X-Request-Id"])
    assert event["model_id"] == NOVA_MICRO
    assert (event["input_tokens"], event["output_tokens"]) == (
        served["inputTokens"],
        served["outputTokens"],
    )
    tokens = TokenUsage(served["inputTokens"], served["outputTokens"])
    assert Decimal(event["cost_usd"]) == load_price_table().cost(NOVA_MICRO, tokens).usd
    assert metrics_line(local_stack, event["event_id"])["model_id"] == NOVA_MICRO

    # A conversation with a system text, through meterctl, to the same model.
    conversation = tmp_path / "conversation.json"
    conversation.write_text(
        json.dumps(
            [
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": body["response"]},
                {"role": "user", "content": "Name another one."},
            ]
        )
    )
    chatted = local_stack.meterctl(
        "chat", "--messages", str(conversation), "--system", "Answer in one word.",
        "--model", NOVA_MICRO, "--max-tokens", "16", "--token", user,
    )  # fmt: skip
    assert chatted.stdout.strip()
    event_id = chatted.stderr.strip().rsplit(" ", 1)[-1]
    second = event_with_id(local_stack, event_id)
    assert (second["model_id"], second["status"]) == (NOVA_MICRO, "ok")
    # Three messages and a system text: more input than the single prompt had.
    assert second["input_tokens"] > event["input_tokens"]


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("acme.mystery-model-v1:0", 400, "ModelNotPriced"),
        ("cohere.command-r-v1:0", 400, "ModelNotPriced"),
        ("amazon.nova-lite-v1:0", 403, "ModelNotAllowed"),
    ],
    ids=["unknown", "unpriced", "not-in-plan"],
)
def test_a_model_the_tenant_may_not_use_is_refused_recorded_and_never_called(
    local_stack: RunningStack, model: str, status: int, code: str
) -> None:
    token = local_stack.create_user(
        f"tenant-refused-{code.lower()}-{uuid.uuid4().hex[:6]}", f"u-{uuid.uuid4().hex[:8]}"
    )
    before = len(local_stack.model_calls())

    got, body, headers = local_stack.request(
        "POST", "/bedrock/chat", token, {"prompt": "hi", "model": model}
    )

    assert got == status, body
    if status == 403:
        assert body["Message"].endswith(f"Models you may use: {DEFAULT_MODEL_ID}.")
    else:
        assert f"Unknown model '{model}'" in body["Message"]
    assert len(local_stack.model_calls()) == before
    event = event_with_id(local_stack, headers["X-Request-Id"])
    assert (event["status"], event["error_code"], event["model_id"]) == ("rejected", code, model)


def test_a_malformed_conversation_is_400_naming_the_field(local_stack: RunningStack) -> None:
    token = local_stack.create_user(
        f"tenant-sloppy-talk-{uuid.uuid4().hex[:6]}", f"talker-{uuid.uuid4().hex[:6]}"
    )
    status, body, _ = local_stack.request(
        "POST",
        "/bedrock/chat",
        token,
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
    )
    assert (status, "must end with a 'user' message" in body["Message"]) == (400, True)


def test_meterctl_explains_wrong_password_and_unknown_user(local_stack: RunningStack) -> None:
    local_stack.create_user("tenant-cli", "carol")
    wrong = local_stack.meterctl(
        "login", "--username", "carol", "--password", "Not-it-123!", check=False
    )
    assert wrong.returncode == 2
    assert "Incorrect username or password" in wrong.stderr
    unknown = local_stack.meterctl(
        "login", "--username", "nobody", "--password", PASSWORD, check=False
    )
    assert unknown.returncode == 2
    assert "No such user" in unknown.stderr
    assert "Traceback" not in wrong.stderr + unknown.stderr
