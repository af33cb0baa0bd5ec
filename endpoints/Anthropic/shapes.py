"""A chat answer in Anthropic's shapes: the whole message, and the events of its stream.

A stream is ``message_start``; per content block (thinking, text, tool_use, in the order the
model wrote them) a ``content_block_start``, its ``content_block_delta`` events
(``thinking_delta``, ``text_delta``, ``input_json_delta``) and a ``content_block_stop``; then
``message_delta`` with the ``stop_reason`` and usage, and ``message_stop``.
"""

from __future__ import annotations

import json
from typing import Any

from common.chat.output import ChatOutput, OutputDelta
from common.generation import Completion
from endpoints.Anthropic.types import (
    ContentBlock,
    Message,
    StopReason,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
)


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as the object Anthropic's ``input`` is (``{}`` for text that is no
    JSON object: the tool parser may end a call the model left unfinished)."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def content_blocks(output: ChatOutput) -> list[ContentBlock]:
    blocks: list[ContentBlock] = []
    if output.reasoning:
        blocks.append(ThinkingBlock(thinking=output.reasoning))
    if output.content:
        blocks.append(TextBlock(text=output.content))
    blocks += [
        ToolUseBlock(id=call.id, name=call.name, input=tool_input(call.arguments))
        for call in output.tool_calls
    ]
    return blocks


def stop_reason(
    completion: Completion, called: bool, stop_sequences: list[str] | None
) -> tuple[StopReason, str | None]:
    """Why the answer ended, and the stop sequence that ended it."""
    if called:
        return "tool_use", None
    if completion.finish_reason == "length":
        return "max_tokens", None
    matched = completion.stop_reason
    if isinstance(matched, str) and matched in (stop_sequences or []):
        return "stop_sequence", matched
    return "end_turn", None


def usage(completion: Completion, input_tokens: int) -> Usage:
    stats = completion.stats
    return Usage(
        input_tokens=input_tokens,
        output_tokens=stats.completion_tokens if stats else 0,
        cache_read_input_tokens=stats.cached_tokens if stats else 0,
    )


def message(
    message_id: str,
    model: str,
    completion: Completion,
    output: ChatOutput,
    input_tokens: int,
    stop_sequences: list[str] | None,
) -> Message:
    reason, sequence = stop_reason(completion, bool(output.tool_calls), stop_sequences)
    return Message(
        id=message_id,
        model=model,
        content=content_blocks(output),
        stop_reason=reason,
        stop_sequence=sequence,
        usage=usage(completion, input_tokens),
    )


class BlockStream:
    """Turns output deltas into content-block events, opening and closing blocks as the kind of
    output changes (reasoning, text, each tool call)."""

    def __init__(self) -> None:
        self.index = -1
        self.kind: str | None = None

    def _open(self, kind: str, block: dict[str, Any]) -> list[dict[str, Any]]:
        events = self.close()
        self.index += 1
        self.kind = kind
        events.append({"type": "content_block_start", "index": self.index, "content_block": block})
        return events

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self.index, "delta": delta}

    def close(self) -> list[dict[str, Any]]:
        """The stop event of the open block, if one is open."""
        if self.kind is None:
            return []
        self.kind = None
        return [{"type": "content_block_stop", "index": self.index}]

    def feed(self, delta: OutputDelta) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if delta.reasoning:
            if self.kind != "thinking":
                events += self._open(
                    "thinking", {"type": "thinking", "thinking": "", "signature": ""}
                )
            events.append(self._delta({"type": "thinking_delta", "thinking": delta.reasoning}))
        if delta.content:
            if self.kind != "text":
                events += self._open("text", {"type": "text", "text": ""})
            events.append(self._delta({"type": "text_delta", "text": delta.content}))
        for piece in delta.tool_calls:
            kind = f"tool_use {piece.index}"
            if self.kind != kind:
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": piece.id,
                    "name": piece.name,
                    "input": {},
                }
                events += self._open(kind, block)
            if piece.arguments:
                events.append(
                    self._delta({"type": "input_json_delta", "partial_json": piece.arguments})
                )
        return events
