"""The chat path's critical path: sequential AWS round trips and handler CPU per request.

One run, budgets off and on. AWS is the local endpoint (moto with DynamoDB serialized, as
`make run` uses) in a process of its own; in front of it, in another process, two small
HTTP proxies: one passes requests straight through, the other holds every AWS request for a
fixed delay before forwarding it. The same request runs through both, interleaved; the extra
wall time divided by the delay is the number of AWS round trips the request waits for one
after another (requests made concurrently overlap, so they count once). The model is an
in-process fake that answers at once, so nothing else is on the path.

Handler CPU is `time.process_time()` around the Lambda handler (`app(event, context)`) in
this process, which hosts neither moto nor the proxies: every thread the handler uses counts.
The identity comes as the deployed stage gets it (API Gateway's verified claims in the
event); `--identity app` makes the app verify a real Cognito ID token itself (the local stage).
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from chalicelib.conversation import Conversation

REGION = "us-east-1"
HOST = "127.0.0.1"
PROMPT = "Please explain about AWS Lambda."
PASSWORD = "Sup3r-secret!"  # noqa: S105 (the benchmark user's password, on a throwaway moto)

# --- the delaying proxy (runs in a child process) -------------------------------------------


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forwards each request to the upstream over a kept-alive connection, after the delay."""

    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def setup(self) -> None:
        super().setup()
        # One write per response and no Nagle: the proxy must not add stalls of its own.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        for attempt in range(2):
            upstream = self._connection()
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                upstream.close()
                self._upstream = None
                if attempt:
                    raise
        out = [f"HTTP/1.1 {response.status} {response.reason}\r\n".encode("latin-1")]
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                out.append(f"{name}: {value}\r\n".encode("latin-1"))
        out.append(f"Content-Length: {len(payload)}\r\n\r\n".encode("latin-1"))
        out.append(payload)
        self.wfile.write(b"".join(out))

    def _connection(self) -> http.client.HTTPConnection:
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(*self.server.upstream, timeout=60)
            self._upstream.connect()
            assert self._upstream.sock is not None
            self._upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._upstream

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, upstream: tuple[str, int], delay_s: float) -> None:
        super().__init__((HOST, port), _ProxyHandler)
        self.upstream = upstream
        self.delay_s = delay_s


def serve_proxies(upstream_port: int, listeners: list[tuple[int, float]]) -> None:
    """Child process: one proxy per (port, delay), all to the upstream, until killed."""
    servers = [_ProxyServer(port, (HOST, upstream_port), delay) for port, delay in listeners]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


def _wait_for_port(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


@contextmanager
def aws_behind_proxies(delay_s: float) -> Iterator[tuple[str, str, str]]:
    """The local AWS endpoint and two proxies, each in a process of its own.

    Yields the endpoint's own URL, the pass-through proxy's and the delaying proxy's.
    """
    from local.running import free_port
    from local.stack import ROOT

    aws_port, direct_port, delayed_port = free_port(), free_port(), free_port()
    listeners = [(direct_port, 0.0), (delayed_port, delay_s)]
    children = [
        [sys.executable, "-m", "local.aws_endpoint", "-H", HOST, "-p", str(aws_port)],
        [
            sys.executable,
            "-c",
            "from bench.critical_path import serve_proxies; "
            f"serve_proxies({aws_port}, {listeners!r})",
        ],
    ]
    processes = [
        subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for argv in children
    ]
    try:
        for port in (aws_port, direct_port, delayed_port):
            _wait_for_port(port)
        yield (
            f"http://{HOST}:{aws_port}",
            f"http://{HOST}:{direct_port}",
            f"http://{HOST}:{delayed_port}",
        )
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


# --- the app under test (this process) -------------------------------------------------------


class FastModel:
    """Answers at once with fixed usage."""

    def converse(self, model_id: str, conversation: Conversation, max_tokens: int, **_: Any) -> Any:  # noqa: ARG002
        from chalicelib.bedrock import ModelReply
        from chalicelib.usage import TokenUsage

        return ModelReply("ok", TokenUsage(20, 10, total_tokens=30), "end_turn")


def provision(endpoint: str) -> dict[str, str]:
    """Every resource of analytics_infra/template.yaml on the endpoint; the stack outputs."""
    from chalicelib import wiring
    from chalicelib.settings import Settings
    from local.provision import provision as provision_template

    local = Settings.from_env({"AWS_REGION": REGION, "AWS_ENDPOINT_URL": endpoint})
    return provision_template(  # type: ignore[no-any-return]
        stage="bench", region=REGION, session=wiring.session(local), endpoint_url=endpoint
    )


def id_token(endpoint: str, outputs: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """A tenant user in the pool, logged in: its ID token and the token's claims."""
    from chalicelib.sessions import LocalEndpointSession

    cognito = LocalEndpointSession(endpoint_url=endpoint, region_name=REGION).client("cognito-idp")
    pool, client_id = outputs["UserPoolId"], outputs["UserPoolClientId"]
    cognito.admin_create_user(
        UserPoolId=pool,
        Username="bench-user",
        UserAttributes=[{"Name": "custom:tenant_id", "Value": "bench-tenant"}],
        MessageAction="SUPPRESS",
    )
    cognito.admin_set_user_password(
        UserPoolId=pool, Username="bench-user", Password=PASSWORD, Permanent=True
    )
    token = cognito.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "bench-user", "PASSWORD": PASSWORD},
    )["AuthenticationResult"]["IdToken"]
    import jwt

    return token, jwt.decode(token, options={"verify_signature": False})


def chat_event(token: str, claims: dict[str, Any]) -> dict[str, Any]:
    """The API Gateway (REST, proxy integration) event of one POST /bedrock/chat."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return {
        "resource": "/bedrock/chat",
        "path": "/bedrock/chat",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/bedrock/chat",
            "httpMethod": "POST",
            "path": "/api/bedrock/chat",
            "stage": "api",
            "requestId": "",
            "authorizer": {"claims": {k: str(v) for k, v in claims.items()}},
        },
        "body": json.dumps({"prompt": PROMPT, "max_tokens": 64}),
        "isBase64Encoded": False,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="per mode and delay")
    parser.add_argument("--warmup", type=int, default=10, help="per mode, not measured")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="added per AWS request")
    parser.add_argument(
        "--with-key",
        action="store_true",
        help="also budgets on with a fresh Idempotency-Key on every request",
    )
    parser.add_argument(
        "--identity",
        choices=("apigateway", "app"),
        default="apigateway",
        help="claims from API Gateway (deployed) or the token verified in the app (local)",
    )
    args = parser.parse_args(argv)
    delay_s = args.delay_ms / 1000
    with aws_behind_proxies(delay_s) as (endpoint, direct, delayed):
        outputs = provision(endpoint)
        token, claims = id_token(endpoint, outputs)
        results = run(
            args,
            outputs=outputs,
            endpoint=endpoint,
            proxies={0.0: direct, delay_s: delayed},
            token=token,
            claims=claims,
        )
        added_s = added_delay(direct, delayed)
    report(results, args, delay_s, added_s)


def added_delay(direct: str, delayed: str, probes: int = 40) -> float:
    """What the delaying proxy really adds to one request (the nominal delay plus the sleep's
    overshoot), measured with plain sequential requests through both proxies."""

    def median_wall(url: str) -> float:
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        walls = []
        for _ in range(probes):
            started = time.perf_counter()
            connection.request("GET", "/bench-probe")  # cheap: moto answers 404
            connection.getresponse().read()
            walls.append(time.perf_counter() - started)
        connection.close()
        return statistics.median(walls[2:])

    return median_wall(delayed) - median_wall(direct)


def run(
    args: argparse.Namespace,
    *,
    outputs: dict[str, str],
    endpoint: str,
    proxies: dict[float, str],
    token: str,
    claims: dict[str, Any],
) -> dict[tuple[str, float], dict[str, list[float]]]:
    from chalice.local import LambdaContext

    from app import app
    from chalicelib import wiring
    from chalicelib.metrics import EmfCallMetrics
    from chalicelib.settings import Settings, env_from_outputs

    logging.getLogger("chalicelib").setLevel(logging.ERROR)
    jwks = f"{endpoint}/{outputs['UserPoolId']}/.well-known/jwks.json"
    common = {
        "STAGE": "bench",
        "AWS_REGION": REGION,
        "TOKEN_VERIFICATION": args.identity,
        "JWKS_URL": jwks,
        **env_from_outputs(outputs),
        "DEFAULT_MONTHLY_BUDGET_USD": "1000000",
        "DEFAULT_TOKENS_PER_MINUTE": "1000000000",
        "DEFAULT_REQUESTS_PER_MINUTE": "1000000000",
    }
    settings = {
        (mode, delay): Settings.from_env(
            {**common, "AWS_ENDPOINT_URL": url, "BUDGETS_ENABLED": str(mode != "off").lower()}
        )
        for mode in modes(args)
        for delay, url in proxies.items()
    }
    wiring.reset()
    # The metrics lines go where Lambda's stdout would, a file descriptor, but not onto this
    # report: os.devnull costs the same write.
    devnull = open(os.devnull, "w")  # noqa: SIM115 (closed after the run)
    stage_models = next(iter(settings.values())).stage_models
    wiring.override(
        model=FastModel(), call_metrics=EmfCallMetrics(stream=devnull, models=stage_models)
    )
    event = chat_event(token, claims)
    samples: dict[tuple[str, float], dict[str, list[float]]] = {
        key: {"wall_ms": [], "cpu_ms": []} for key in settings
    }

    def one(key: tuple[str, float], measured: bool) -> None:
        wiring.override(settings=settings[key])
        event["requestContext"]["requestId"] = str(uuid.uuid4())
        event["headers"].pop("Idempotency-Key", None)
        if key[0] == "on+key":
            event["headers"]["Idempotency-Key"] = str(uuid.uuid4())
        event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
        context = LambdaContext("api_handler", 1024, max_runtime_ms=29_000)
        wall, cpu = time.perf_counter(), time.process_time()
        response = app(event, context)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if response["statusCode"] != 200:
            raise SystemExit(f"{key}: HTTP {response['statusCode']} {response['body']}")
        if measured:
            samples[key]["wall_ms"].append(wall * 1000)
            samples[key]["cpu_ms"].append(cpu * 1000)

    for _ in range(args.warmup):  # clients, signing keys, plan cache, the month's index
        for key in settings:
            one(key, measured=False)
    for _ in range(args.requests):
        for key in settings:
            one(key, measured=True)
    wiring.reset()
    devnull.close()
    return samples


def modes(args: argparse.Namespace) -> tuple[str, ...]:
    return ("off", "on", "on+key") if args.with_key else ("off", "on")


def report(
    results: dict[tuple[str, float], dict[str, list[float]]],
    args: argparse.Namespace,
    delay_s: float,
    added_s: float,
) -> None:
    print("Critical path of POST /bedrock/chat: Lambda handler in this process, fake instant")
    print(
        f"model, AWS = local endpoint (moto) in another process behind a proxy adding "
        f"{args.delay_ms:g} ms per AWS request; identity: {args.identity}; "
        f"{args.requests} requests per mode and delay, interleaved. Measured delay added per "
        f"request: {added_s * 1000:.1f} ms (round trips = extra wall time / that)."
    )
    print(
        f"{'':14}{'round trips':>12}{'wall ms':>10}{'wall ms':>10}"
        f"{'CPU ms':>9}{'CPU ms':>9}{'CPU ms':>9}"
    )
    print(
        f"{'':14}{'(sequential)':>12}{'+0':>10}{f'+{args.delay_ms:g}/req':>10}"
        f"{'median':>9}{'mean':>9}{'p90':>9}"
    )
    for mode in modes(args):
        base, slow = results[(mode, 0.0)], results[(mode, delay_s)]
        wall0 = statistics.median(base["wall_ms"])
        wall1 = statistics.median(slow["wall_ms"])
        trips = (wall1 - wall0) / (added_s * 1000)
        cpu = base["cpu_ms"] + slow["cpu_ms"]
        p90 = sorted(cpu)[round(0.9 * (len(cpu) - 1))]
        print(
            f"budgets {mode:<6}{trips:>12.2f}{wall0:>10.1f}{wall1:>10.1f}"
            f"{statistics.median(cpu):>9.2f}{statistics.fmean(cpu):>9.2f}{p90:>9.2f}"
        )


if __name__ == "__main__":
    main()
