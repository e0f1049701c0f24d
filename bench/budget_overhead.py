"""What the budget path adds to a chat request, and the AWS calls each request makes.

One run, two modes, interleaved request by request: the same POST /bedrock/chat through the
Chalice app (token check, usage event to Firehose) with budgets disabled and enabled (reserve,
settle on DynamoDB; the plan comes from the container's cache). AWS is a moto server over
loopback and the model is an in-process fake that answers at once, so the difference is the
budget path itself. Calls are counted on the app's own clients: botocore's before-call event
on boto3 clients, a wrapper on the lean DynamoDB and Firehose clients. Not every call is on
the critical path (the settle runs beside the durable write): `python -m bench.critical_path`
measures the sequential round trips.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import threading
import time
from collections import Counter
from typing import Any

from chalicelib.conversation import Conversation

REGION = "us-east-1"
BOTO3 = ("s3", "sns")  # the fallback and alerts: boto3 clients
LEAN = ("dynamodb", "firehose")  # the request path's lean clients (chalicelib.aws_json)


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

    def converse(self, model_id: str, conversation: Conversation, max_tokens: int) -> Any:  # noqa: ARG002
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
    from chalicelib.metrics import EmfCallMetrics
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
    # Metrics lines to os.devnull: the same write as Lambda's stdout, off this report.
    devnull = open(os.devnull, "w")  # noqa: SIM115 (closed after the run)
    wiring.override(
        model=FastModel(), verifier=FixedVerifier(), call_metrics=EmfCallMetrics(stream=devnull)
    )
    headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
    body = json.dumps({"prompt": "Please explain about AWS Lambda.", "max_tokens": 64})
    counter = CallCounter(list(modes))
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    with Client(app) as client:

        def one(mode: str, measured: bool) -> None:
            wiring.override(settings=modes[mode])
            counter.mode = mode if measured else ""
            started = time.perf_counter()
            response = client.http.post("/bedrock/chat", headers=headers, body=body)
            elapsed = time.perf_counter() - started
            counter.mode = ""
            if response.status_code != 200:
                raise SystemExit(f"{mode}: HTTP {response.status_code} {response.body!r}")
            if measured:
                times[mode].append(elapsed * 1000)

        for _ in range(warmup):  # builds and caches clients, registers the tenant's month
            for mode in modes:
                one(mode, measured=False)
        counter.hook(list(modes.values()))
        for _ in range(requests):
            for mode in modes:
                one(mode, measured=True)
    wiring.reset()
    devnull.close()
    return {"times": times, "calls": counter.calls, "call_ms": counter.call_ms}


class CallCounter:
    """Counts and times the AWS calls the app's own clients make while `mode` is set."""

    def __init__(self, modes: list[str]) -> None:
        self.mode = ""
        self.calls: dict[str, Counter[str]] = {mode: Counter() for mode in modes}
        self.call_ms: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._hooked: set[int] = set()

    def hook(self, settings: list[Any]) -> None:
        """Hook the cached clients of each Settings (modes may share them)."""
        from chalicelib import wiring

        for mode_settings in settings:
            for service in BOTO3:
                boto3_client = wiring.client(service, mode_settings)
                if id(boto3_client) not in self._hooked:
                    self._hooked.add(id(boto3_client))
                    boto3_client.meta.events.register("before-call", self._before)
            for service in LEAN:
                lean = wiring.request_client(service, mode_settings)
                if id(lean) not in self._hooked:
                    self._hooked.add(id(lean))
                    lean.call = self._timed(service, lean.call)

    def _before(self, event_name: str, **_: Any) -> None:
        if self.mode:
            with self._lock:
                self.calls[self.mode][event_name.removeprefix("before-call.")] += 1

    def _timed(self, service: str, call: Any) -> Any:
        def wrapper(operation: str, params: Any) -> Any:
            mode = self.mode
            started = time.perf_counter()
            try:
                return call(operation, params)
            finally:
                if mode:
                    elapsed = (time.perf_counter() - started) * 1000
                    with self._lock:
                        self.calls[mode][f"{service}.{operation}"] += 1
                        self.call_ms.setdefault(f"{service}.{operation}", []).append(elapsed)

        return wrapper


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
    print("AWS calls per request (the settle runs beside the durable write):")
    for mode, counter in calls.items():
        per_request = {op: n / requests for op, n in sorted(counter.items())}
        listed = ", ".join(f"{op} {n:g}" for op, n in per_request.items())
        print(f"  budgets {mode:<9} {sum(per_request.values()):g} total: {listed}")
    print("Mean time per call on this moto server (client side, loopback included):")
    for op, values in sorted(results["call_ms"].items()):
        print(f"  {op:<26}{statistics.fmean(values):>7.2f} ms")


if __name__ == "__main__":
    main()
