"""What a chat call sends the model: its messages, user and assistant in turn, and a system text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "assistant"]
ROLES: tuple[Role, ...] = ("user", "assistant")


@dataclass(frozen=True)
class Message:
    """One turn of the conversation: who said it, and its text."""

    role: Role
    text: str


@dataclass(frozen=True)
class Conversation:
    """The model's input: messages that alternate, starting and ending with the user, and an
    optional system text (instructions the model follows for the whole conversation).

    Built only from a validated request (chalicelib.chat.parse_chat_request), which checks
    those rules; a single prompt is a conversation of one user message.
    """

    messages: tuple[Message, ...]
    system: str | None = None

    @classmethod
    def from_prompt(cls, prompt: str, system: str | None = None) -> Conversation:
        """A one-message conversation."""
        return cls((Message("user", prompt),), system)

    @property
    def chars(self) -> int:
        """Characters of text across the messages and the system text (what the size limit
        counts)."""
        return sum(len(message.text) for message in self.messages) + len(self.system or "")

    def utf8_bytes(self) -> int:
        """Bytes of text across the messages and the system text, UTF-8 encoded (what the
        budget's input estimate counts)."""
        total = sum(len(message.text.encode("utf-8")) for message in self.messages)
        return total + len((self.system or "").encode("utf-8"))
