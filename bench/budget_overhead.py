"""What the budget path adds to a chat request, and the AWS calls on its critical path.

One run, two modes, interleaved request by request: the same POST /bedrock/chat through the
Chalice app (token check, usage event to Firehose) with budgets disabled and enabled (plan
read, reserve, settle on DynamoDB). AWS is a moto server over loopback and the model is an
in-process fake that answers at once, so the difference is the budget path itself. Every AWS
call a request makes happens before its response, so all of them are on the critical path;
they are counted with botocore's before-call event on the app's own clients.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections import Counter
from typing import Any

REGION = "us-east-1"
SERVICES = ("dynamodb", "firehose", "s3", "sns")


def provision(endpoint: str) -> dict[str, str]:
    """Every resource of analytics_infra/template.yaml on the moto server; their env settings."""
    from chalicelib import wiring
    from chalicelib.settings import Settings, env_from_outputs
    from local.provision import provision as provision_template

    local = Settings.from_env({"AWS_REGION": REGION, "AWS_ENDPOINT_URL": endpoint})
    outputs = provision_template(
        stage="bench", region=REGION, session=wiring.session(local), endpoint_url=endpoint
    )
    return env_from_outputs(outputs)


class FastModel:
    """Answers at once with fixed usage."""

    def converse(self, model_id: str, prompt: str, max_tokens: int) -> Any:  # noqa: ARG002
        from chalicelib.bedrock import ModelReply
        from chalicelib.usage import TokenUsage

        return ModelReply("ok", TokenUsage(20, 10, total_tokens=30), "end_turn")


class FixedVerifier:
    """Accepts any bearer token as one tenant user (the same cost in both modes)."""

    def verify(self, token: str) -> dict[str, Any]:  # noqa: ARG002
        return {"sub": "bench-user", "custom:tenant_id": "bench-tenant", "cognito:username": "b"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per mode (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="per mode, not measured")
    args = parser.parse_args(argv)

    from local.running import moto_server

    with moto_server() as endpoint:
        resources = provision(endpoint)
        results = run(endpoint, resources, args.requests, args.warmup)
    report(results, args.requests)


def run(endpoint: str, resources: dict[str, str], requests: int, warmup: int) -> dict[str, Any]:
    from chalice.test import Client

    from app import app
    from chalicelib import wiring
    from chalicelib.settings import Settings

    logging.getLogger("chalicelib").setLevel(logging.ERROR)
    common = {
        "STAGE": "bench",
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,  # wiring's clients go there, with dummy credentials
        "TOKEN_VERIFICATION": "app",
        **resources,
        "DEFAULT_MONTHLY_BUDGET_USD": "1000000",
        "DEFAULT_TOKENS_PER_MINUTE": "1000000000",
        "DEFAULT_REQUESTS_PER_MINUTE": "1000000000",
    }
    modes = {
        "disabled": Settings.from_env({**common, "BUDGETS_ENABLED": "false"}),
        "enabled": Settings.from_env({**common, "BUDGETS_ENABLED": "true"}),
    }
    wiring.reset()
    wiring.override(model=FastModel(), verifier=FixedVerifier())
    headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
    body = json.dumps({"prompt": "Please explain about AWS Lambda.", "max_tokens": 64})
    calls: dict[str, Counter[str]] = {mode: Counter() for mode in modes}
    call_ms: dict[str, list[float]] = {}
    aws_ms: dict[str, float] = dict.fromkeys(modes, 0.0)
    current: dict[str, Any] = {"mode": "", "started": 0.0}

    def before(event_name: str, **_: Any) -> None:
        if current["mode"]:
            calls[current["mode"]][event_name.removeprefix("before-call.")] += 1
            current["started"] = time.perf_counter()

    def after(event_name: str, **_: Any) -> None:
        if current["mode"]:
            elapsed = (time.perf_counter() - current["started"]) * 1000
            call_ms.setdefault(event_name.removeprefix("after-call."), []).append(elapsed)
            aws_ms[current["mode"]] += elapsed

    times: dict[str, list[float]] = {mode: [] for mode in modes}
    with Client(app) as client:

        def one(mode: str, measured: bool) -> None:
            wiring.override(settings=modes[mode])
            current["mode"] = mode if measured else ""
            started = time.perf_counter()
            response = client.http.post("/bedrock/chat", headers=headers, body=body)
            elapsed = time.perf_counter() - started
            current["mode"] = ""
            if response.status_code != 200:
                raise SystemExit(f"{mode}: HTTP {response.status_code} {response.body!r}")
            if measured:
                times[mode].append(elapsed * 1000)

        for _ in range(warmup):  # builds and caches clients, registers the tenant's month
            for mode in modes:
                one(mode, measured=False)
        hooked = {  # the app's own cached clients (both modes share them)
            id(c): c for c in (wiring.client(s, m) for s in SERVICES for m in modes.values())
        }
        for aws_client in hooked.values():
            aws_client.meta.events.register("before-call", before)
            aws_client.meta.events.register("after-call", after)
        for _ in range(requests):
            for mode in modes:
                one(mode, measured=True)
    wiring.reset()
    return {"times": times, "calls": calls, "call_ms": call_ms, "aws_ms": aws_ms}


def report(results: dict[str, Any], requests: int) -> None:
    times, calls = results["times"], results["calls"]
    median = {mode: statistics.median(values) for mode, values in times.items()}
    print("Budget path overhead: POST /bedrock/chat via the Chalice test client, AWS on a moto")
    print(f"server over loopback, fake instant model; {requests} requests per mode, interleaved.")
    print(f"{'':22}{'median ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for mode, values in times.items():
        print(
            f"budgets {mode:<14}{median[mode]:>10.2f}{percentile(values, 0.95):>10.2f}"
            f"{statistics.fmean(values):>10.2f}"
        )
    extra = median["enabled"] - median["disabled"]
    print(
        f"overhead: +{extra:.2f} ms per request (median), "
        f"ratio {median['enabled'] / median['disabled']:.2f}x"
    )
    print("AWS calls per request on the critical path:")
    for mode, counter in calls.items():
        per_request = {op: n / requests for op, n in sorted(counter.items())}
        listed = ", ".join(f"{op} {n:g}" for op, n in per_request.items())
        print(f"  budgets {mode:<9} {sum(per_request.values()):g} total: {listed}")
    outside = {
        mode: statistics.fmean(times[mode]) - results["aws_ms"][mode] / requests for mode in times
    }
    print(
        "Mean time per request outside AWS calls (app code incl. budget math): "
        + ", ".join(f"budgets {mode} {ms:.2f} ms" for mode, ms in outside.items())
    )
    print("Mean time per call on this moto server (client side, loopback included):")
    for op, values in sorted(results["call_ms"].items()):
        print(f"  {op:<26}{statistics.fmean(values):>7.2f} ms")


if __name__ == "__main__":
    main()
