"""The Converse wire format: request parsing, response building, errors and wire shapes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import ClassVar, Literal, TypedDict
from urllib.parse import unquote

# The maxTokens range accepted (4,096 is Claude 3 Haiku's output limit, the model the app
# targets); Bedrock's own limit depends on the model.
MIN_MAX_TOKENS = 1
MAX_MAX_TOKENS = 4096
# Bedrock falls back to the model's own default when maxTokens is absent; this one keeps the
# small local model from running for minutes on a request that forgot to set it.
DEFAULT_MAX_TOKENS = 512
MAX_STOP_SEQUENCES = 2500
# Converse features the stand-in cannot honour: refusing them is safer than ignoring them.
UNSUPPORTED_FIELDS = ("toolConfig", "guardrailConfig", "promptVariables", "outputConfig")

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


class ResourceNotFoundError(BedrockError):
    """The ARN names no model or inference profile the service knows."""

    code = "ResourceNotFoundException"
    status = 404


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
