"""Amazon Bedrock Runtime adapter: one Converse call, errors mapped to domain errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.aws_errors import error_code
from chalicelib.conversation import Conversation
from chalicelib.errors import ModelThrottledError, ModelUnavailableError
from chalicelib.usage import TokenUsage

THROTTLING_CODES = frozenset(
    {"ThrottlingException", "ServiceQuotaExceededException", "TooManyRequestsException"}
)
GENERIC_MODEL_ERROR = "The model could not answer this request. Please try again later."
THROTTLED_MESSAGE = "The model is receiving too many requests. Please retry later."


@dataclass(frozen=True)
class ModelReply:
    """What a successful Converse call returned."""

    text: str
    usage: TokenUsage
    stop_reason: str


def converse_request(model_id: str, conversation: Conversation, max_tokens: int) -> dict[str, Any]:
    """Converse's parameters: each message one text block, the system text a block of its
    own (Converse's `system`, not a first message, so the model treats it as instructions)."""
    request: dict[str, Any] = {
        "modelId": model_id,
        "messages": [
            {"role": message.role, "content": [{"text": message.text}]}
            for message in conversation.messages
        ],
        "inferenceConfig": {"maxTokens": max_tokens},
    }
    if conversation.system is not None:
        request["system"] = [{"text": conversation.system}]
    return request


class BedrockModel:
    """Calls Bedrock Converse with a conversation."""

    def __init__(self, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("bedrock-runtime")
        self._client = client

    def converse(self, model_id: str, conversation: Conversation, max_tokens: int) -> ModelReply:
        """Send the conversation to `model_id`; raise ModelThrottledError or
        ModelUnavailableError on failure."""
        request = converse_request(model_id, conversation, max_tokens)
        try:
            response = self._client.converse(**request)
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc)
            if code in THROTTLING_CODES:
                raise ModelThrottledError(THROTTLED_MESSAGE, code) from exc
            raise ModelUnavailableError(GENERIC_MODEL_ERROR, code) from exc
        content = response.get("output", {}).get("message", {}).get("content", [])
        text = "".join(block.get("text", "") for block in content)
        return ModelReply(
            text=text,
            usage=TokenUsage.from_converse(response.get("usage", {})),
            stop_reason=str(response.get("stopReason", "")),
        )
