"""What tool-call parsers produce: content text and tool-call pieces, as they are generated."""

from __future__ import annotations

import secrets
from dataclasses import dataclass


def new_call_id() -> str:
    """An OpenAI-style tool-call id: ``call_`` and 24 hex digits."""
    return f"call_{secrets.token_hex(12)}"


@dataclass
class ContentDelta:
    """Text outside tool calls."""

    text: str


@dataclass
class ToolCallDelta:
    """A piece of tool call ``index``: the first piece has ``id`` and ``name``, the others
    carry the next part of the arguments (JSON text)."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


ParserEvent = ContentDelta | ToolCallDelta


@dataclass
class ToolCall:
    """A finished call, as the non-streaming answer shows it."""

    id: str
    name: str
    arguments: str = ""
