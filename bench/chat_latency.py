"""Chat latency on the local stack with the real model, against the model alone in the same run.

Starts a private local stack (free ports, SmolLM2 behind the Bedrock stand-in), creates a tenant,
then alternates: one converse call straight to the stand-in (the baseline: model time alone) and
one POST /bedrock/chat through the app (token check, model call, usage event to Firehose on moto).
Both use the same prompt and max_tokens, so the difference is what the API and metering add.

With `--nagle-baseline` (the default), a second stand-in with the same engine runs in this
process with TCP_NODELAY off, as the stand-in was before, and the model-alone call is timed on
it too: the difference is the ~40 ms each call waited for a delayed ACK (Nagle's algorithm
holding back the response body until the client acknowledged its headers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from local.bedrock_server.server import serve
from local.running import running_stack

PROMPT = "Please explain about AWS Lambda."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--engine", default="llama", choices=["llama", "echo"])
    parser.add_argument(
        "--nagle-baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the model alone on a stand-in with TCP_NODELAY off (default: on)",
    )
    args = parser.parse_args(argv)

    state_dir = Path(tempfile.mkdtemp(prefix="bench-chat-"))
    started = time.monotonic()
    with running_stack(state_dir, engine=args.engine, job_interval_s=3600) as running:
        startup_s = time.monotonic() - started
        outputs = running.outputs
        token = running.create_user("bench-tenant", "bench-user")
        bedrock = bedrock_client(outputs["BedrockEndpointUrl"])
        nagle = None
        if args.nagle_baseline:
            nagle = serve(port=0, engine=args.engine, tcp_nodelay=False)
        nagle_bedrock = bedrock_client(nagle.endpoint_url) if nagle else None
        direct_ms: list[float] = []
        nagle_ms: list[float] = []
        api_ms: list[float] = []
        output_tokens: list[int] = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            reply = converse(bedrock, args.max_tokens)
            direct_ms.append((time.perf_counter() - t0) * 1000)
            output_tokens.append(reply["usage"]["outputTokens"])
            if nagle_bedrock is not None:
                t0 = time.perf_counter()
                converse(nagle_bedrock, args.max_tokens)
                nagle_ms.append((time.perf_counter() - t0) * 1000)

            request = urllib.request.Request(
                outputs["ApiGatewayUrl"] + "bedrock/chat",
                data=json.dumps({"prompt": PROMPT, "max_tokens": args.max_tokens}).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                method="POST",
            )
            t0 = time.perf_counter()
            with urllib.request.urlopen(request, timeout=300) as response:
                response.read()
            api_ms.append((time.perf_counter() - t0) * 1000)
        if nagle is not None:
            nagle.stop()

    direct_median = statistics.median(direct_ms)
    api_median = statistics.median(api_ms)
    print(f"engine={args.engine} calls={args.calls} max_tokens={args.max_tokens} prompt={PROMPT!r}")
    print(f"stack startup: {startup_s:.1f} s")
    print(f"median output tokens: {statistics.median(output_tokens):.0f}")
    direct_p90 = percentile(direct_ms, 0.9)
    api_p90 = percentile(api_ms, 0.9)
    print(f"model alone (baseline):  median {direct_median:7.1f} ms  p90 {direct_p90:7.1f} ms")
    if nagle_ms:
        nagle_median, nagle_p90 = statistics.median(nagle_ms), percentile(nagle_ms, 0.9)
        print(
            f"  same, TCP_NODELAY off:  median {nagle_median:7.1f} ms  p90 {nagle_p90:7.1f} ms"
            f"  (the stall it removes: {nagle_median - direct_median:+.1f} ms per call)"
        )
    print(f"POST /bedrock/chat:      median {api_median:7.1f} ms  p90 {api_p90:7.1f} ms")
    print(
        f"API + metering overhead: median {api_median - direct_median:+7.1f} ms  "
        f"ratio {api_median / direct_median:.2f}x"
    )


def bedrock_client(endpoint_url: str) -> Any:
    """A bedrock-runtime client on a stand-in, without retries."""
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def converse(client: Any, max_tokens: int) -> Any:
    """One direct converse call with the benchmark's prompt."""
    return client.converse(
        modelId="anthropic.claude-3-haiku-20240307-v1:0",
        messages=[{"role": "user", "content": [{"text": PROMPT}]}],
        inferenceConfig={"maxTokens": max_tokens},
    )


if __name__ == "__main__":
    main()
