"""The stand-in's HTTP server: routes, fault injection, the call ledger and the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

from chalicelib.model_profiles import parse_aliases
from chalicelib.settings import MODEL_ALIASES
from local.bedrock_server.engines import (
    DEFAULT_ENGINE,
    ENGINE_NAMES,
    Engine,
    default_threads,
    make_engine,
)
from local.bedrock_server.models import ModelCatalog
from local.bedrock_server.wire import (
    AccessDeniedError,
    BedrockError,
    ConverseRequest,
    Generation,
    ModelError,
    ThrottlingError,
    UnknownOperationError,
    ValidationError,
    build_converse_response,
    match_converse_path,
    parse_converse_request,
)

# The stand-in's one logger, named as before it became a package so its log lines keep
# their name.
logger = logging.getLogger("local.bedrock_server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4567
# A request larger than this is refused unread: nothing the local model's 2,048-token window
# can use comes near it.
MAX_BODY_BYTES = 10 * 1024 * 1024


# --- fault injection ----------------------------------------------------------------------


class FaultInjector:
    """Counters of injected failures: each one fails that many upcoming converse calls."""

    _ERRORS: ClassVar[dict[str, tuple[type[BedrockError], str]]] = {
        "throttle": (ThrottlingError, "Too many requests, please wait before trying again."),
        "model_error": (ModelError, "The model failed to process the request (injected fault)."),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = dict.fromkeys(self._ERRORS, 0)

    def configure(self, counts: Mapping[str, object]) -> dict[str, int]:
        """Set the named counters (the others keep their value); return all of them."""
        unknown = sorted(set(counts) - set(self._ERRORS))
        if unknown:
            raise ValidationError(
                f"Unknown fault(s) {unknown}; known faults are {sorted(self._ERRORS)}."
            )
        for kind, value in counts.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValidationError(f"Fault {kind!r} must be a non-negative integer.")
        with self._lock:
            self._pending.update(cast(Mapping[str, int], counts))
            return dict(self._pending)

    def snapshot(self) -> dict[str, int]:
        """The pending counters."""
        with self._lock:
            return dict(self._pending)

    def take(self) -> None:
        """Raise the next pending fault, throttling first, and count it down."""
        with self._lock:
            for kind, (error, message) in self._ERRORS.items():
                if self._pending[kind] > 0:
                    self._pending[kind] -= 1
                    raise error(message)


class CallLedger:
    """What the stand-in served, so end-to-end tests can compare metering with the model."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._calls: deque[dict[str, object]] = deque(maxlen=capacity)

    def add(self, model_id: str, generation: Generation, latency_ms: int) -> None:
        """Remember one successful converse call and the usage it reported."""
        with self._lock:
            self._calls.append(
                {
                    "modelId": model_id,
                    "inputTokens": generation.input_tokens,
                    "outputTokens": generation.output_tokens,
                    "totalTokens": generation.input_tokens + generation.output_tokens,
                    "stopReason": generation.stop_reason,
                    "latencyMs": latency_ms,
                }
            )

    def snapshot(self) -> list[dict[str, object]]:
        """Served calls, oldest first."""
        with self._lock:
            return list(self._calls)


# --- HTTP ---------------------------------------------------------------------------------


class BedrockServer(ThreadingHTTPServer):
    """The HTTP server; holds the engine and the fault counters its handlers share."""

    # Daemon threads so that a server nobody stopped cannot hang interpreter exit; stop()
    # still ends and joins every one of them, because a handler thread that ran llama.cpp
    # and is still alive when the interpreter finalizes can abort the process
    # ("terminate called without an active exception").
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        engine: Engine,
        faults: FaultInjector | None = None,
        *,
        tcp_nodelay: bool = True,
        models: ModelCatalog | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.engine = engine
        self.models = models or ModelCatalog()
        self.tcp_nodelay = tcp_nodelay
        self.faults = faults if faults is not None else FaultInjector()
        self.calls = CallLedger()
        self._thread: threading.Thread | None = None
        self._connections_lock = threading.Lock()
        self._connections: dict[Any, threading.Thread] = {}

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        return int(self.server_address[1])

    @property
    def endpoint_url(self) -> str:
        """What to pass to boto3 as endpoint_url."""
        return f"http://{self.server_address[0]!s}:{self.port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        """Handle the connection in its own thread, remembered until the connection ends."""
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"local-bedrock-{self.port}-client-{client_address[1]}",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection, then close it."""
        with self._connections_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002
        """Log, rather than print, an error that escaped a handler."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            # A client that hung up mid-response: routine for timeouts, not a server fault.
            logger.debug("client %s went away: %s", client_address, error)
        else:
            logger.error("connection from %s failed", client_address, exc_info=True)

    def start(self) -> BedrockServer:
        """Serve in a daemon thread; return self."""
        # A short poll interval: shutdown() waits up to one interval for the loop to notice.
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"local-bedrock-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, end kept-alive connections, close."""
        self.shutdown()
        with self._connections_lock:
            open_connections = dict(self._connections)
        for connection in open_connections:
            # SHUT_RD wakes a handler waiting for the next request on a kept-alive connection
            # (its read returns EOF) while a response still being written goes out whole.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RD)
        for thread in open_connections.values():
            thread.join()
        self.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps botocore's pooled connections open between calls.
    protocol_version = "HTTP/1.1"
    server_version = "LocalBedrock/1.0"
    server: BedrockServer

    def setup(self) -> None:
        super().setup()
        if self.server.tcp_nodelay:
            # A response goes out as two writes (headers, then body). With Nagle's algorithm
            # the body waits for the ACK of the headers, which a client on a kept-alive
            # connection delays by up to 40 ms: every call would stall that long.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        # The converse route logs one line of its own; the stdlib access log would double it.
        logger.debug(format, *args)

    def _dispatch(self, method: str) -> None:
        request_id = str(uuid.uuid4())
        path = urlsplit(self.path).path
        try:
            # Read the body first, whatever the outcome: an unread body left on a kept-alive
            # connection would be parsed as the next request.
            body = self._read_body()
            model_id = match_converse_path(path)
            if model_id is not None and method == "POST":
                self._converse(model_id, body, request_id)
            elif path == "/health" and method == "GET":
                self._send_json(
                    200, {"status": "ok", "engine": self.server.engine.name}, request_id
                )
            elif path == "/_calls" and method == "GET":
                self._send_json(200, {"calls": self.server.calls.snapshot()}, request_id)
            elif path == "/_faults" and method in ("GET", "POST"):
                self._faults(method, body, request_id)
            else:
                raise UnknownOperationError(f"No operation at {method} {path}.")
        except BedrockError as err:
            self._send_error(err, request_id)
        except Exception:
            logger.exception("unexpected error on %s %s", method, path)
            self._send_error(
                BedrockError("The server encountered an unexpected error."), request_id
            )

    def _read_body(self) -> bytes:
        raw_length = self.headers.get("Content-Length", "0")
        try:
            length = int(raw_length)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            raise ValidationError(f"Invalid or too large Content-Length: {raw_length}.")
        return self.rfile.read(length) if length else b""

    def _converse(self, model_id: str, body: bytes, request_id: str) -> None:
        started = time.perf_counter()
        # Bedrock checks the signature before anything else; the stand-in only checks that
        # there is one, so an unsigned client is caught without managing credentials.
        if "Authorization" not in self.headers:
            raise AccessDeniedError("Missing Authentication Token")
        try:
            request = parse_converse_request(model_id, body)
            self.server.models.check(model_id)
            # Faults count only requests that would have reached the model.
            self.server.faults.take()
            generation = self._generate(request)
        except BedrockError as err:
            logger.info("converse model=%s error=%s: %s", model_id, err.code, err.message)
            raise
        latency_ms = round((time.perf_counter() - started) * 1000)
        logger.info(
            "converse model=%s in=%d out=%d stop=%s latency_ms=%d",
            model_id,
            generation.input_tokens,
            generation.output_tokens,
            generation.stop_reason,
            latency_ms,
        )
        self.server.calls.add(model_id, generation, latency_ms)
        self._send_json(200, build_converse_response(generation, latency_ms), request_id)

    def _generate(self, request: ConverseRequest) -> Generation:
        try:
            return self.server.engine.generate(
                request.messages,
                request.system,
                request.max_tokens,
                request.temperature,
                request.stop_sequences,
                top_p=request.top_p,
            )
        except BedrockError:
            raise
        except Exception as exc:
            logger.exception("engine %s failed", self.server.engine.name)
            raise ModelError("The model failed to process the request.") from exc

    def _faults(self, method: str, body: bytes, request_id: str) -> None:
        if method == "GET":
            self._send_json(200, self.server.faults.snapshot(), request_id)
            return
        try:
            counts = json.loads(body or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValidationError(f"The request body is not valid JSON: {exc}") from exc
        if not isinstance(counts, dict):
            raise ValidationError('Send an object such as {"throttle": 1, "model_error": 0}.')
        pending = self.server.faults.configure(counts)
        logger.info("faults pending: %s", pending)
        self._send_json(200, pending, request_id)

    def _send_error(self, err: BedrockError, request_id: str) -> None:
        # botocore's rest-json parser takes the code from x-amzn-ErrorType and the text from
        # the body's "message".
        self._send_json(
            err.status, {"message": err.message}, request_id, {"x-amzn-ErrorType": err.code}
        )

    def _send_json(
        self,
        status: int,
        payload: Mapping[str, Any],
        request_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", request_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def make_server(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    engine: Engine | str = DEFAULT_ENGINE,
    *,
    tcp_nodelay: bool = True,
    models: ModelCatalog | None = None,
) -> BedrockServer:
    """A bound, not yet serving, server; `engine` is an Engine or an engine name.

    `tcp_nodelay=False` brings back the ~40 ms stall per call (for the latency benchmark).
    `models`: the model ids it answers for (default: every priced model).
    """
    resolved = make_engine(engine) if isinstance(engine, str) else engine
    return BedrockServer((host, port), resolved, tcp_nodelay=tcp_nodelay, models=models)


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    engine: Engine | str = DEFAULT_ENGINE,
    *,
    tcp_nodelay: bool = True,
    models: ModelCatalog | None = None,
) -> BedrockServer:
    """A server already serving in a daemon thread (port 0 picks a free one); call stop()."""
    return make_server(host, port, engine, tcp_nodelay=tcp_nodelay, models=models).start()


# --- CLI ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m local.bedrock_server",
        description="Local Amazon Bedrock Runtime (Converse API) backed by a small local model.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--engine", choices=ENGINE_NAMES, default=DEFAULT_ENGINE)
    parser.add_argument("--model-path", type=Path, help="GGUF file for the llama engine")
    parser.add_argument(
        "--threads", type=int, help=f"llama.cpp threads (default {default_threads()})"
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"))
    parser.add_argument(
        "--no-tcp-nodelay",
        action="store_true",
        help="leave Nagle's algorithm on (each call then stalls ~40 ms; for comparison only)",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # Application inference profile ARNs are served if MODEL_ALIASES maps them, as in the app.
    aliases = dict(parse_aliases(os.environ.get(MODEL_ALIASES, "")))
    # Load the model before binding, so that a client never reaches a server still loading.
    engine = make_engine(args.engine, args.model_path, args.threads)
    server = make_server(
        args.host,
        args.port,
        engine,
        tcp_nodelay=not args.no_tcp_nodelay,
        models=ModelCatalog(aliases=aliases),
    )

    stopping = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.set()

    # serve_forever runs in a thread because shutdown() blocks until it returns: calling it
    # from a signal handler on the serving thread would deadlock.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.start()
    print(f"Local Bedrock ready on {server.endpoint_url} (engine {engine.name})", flush=True)
    stopping.wait()
    server.stop()
    return 0
