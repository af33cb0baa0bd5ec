"""From generated text to an assistant message: reasoning, content and tool calls.

One :class:`ChatOutputParser` per choice turns the engine's text pieces into
:class:`OutputDelta` objects (what a stream sends next); :class:`ChatOutput` adds the deltas
up into the whole message. Streamed and whole answers go through the same steps, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.chat.reasoning import ReasoningSplitter
from common.chat.tools.calls import ContentDelta, ParserEvent, ToolCall, ToolCallDelta
from common.chat.tools.parser import ToolCallParser


@dataclass
class OutputDelta:
    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls)


class ChatOutputParser:
    """Reasoning first (when the model reasons), then content and calls (when tools are on)."""

    def __init__(
        self, reasoning: ReasoningSplitter | None = None, tools: ToolCallParser | None = None
    ) -> None:
        self._reasoning = reasoning
        self._tools = tools

    def feed(self, text: str, final: bool = False) -> OutputDelta:
        """The output that ``text`` completes; ``final``: the text ends here."""
        reasoning, content = "", text
        if self._reasoning is not None:
            reasoning, content = self._reasoning.feed(text)
            if final:
                more_reasoning, more_content = self._reasoning.finish()
                reasoning, content = reasoning + more_reasoning, content + more_content
        if self._tools is None:
            return OutputDelta(reasoning, content)
        events = self._tools.feed(content) if content else []
        if final:
            events += self._tools.finish()
        delta = _merged(events)
        delta.reasoning = reasoning
        return delta


def _merged(events: list[ParserEvent]) -> OutputDelta:
    """Parser events as one delta: content joined, argument pieces of a call joined."""
    delta = OutputDelta()
    for event in events:
        if isinstance(event, ContentDelta):
            delta.content += event.text
        elif delta.tool_calls and delta.tool_calls[-1].index == event.index:
            delta.tool_calls[-1].arguments += event.arguments
        else:
            delta.tool_calls.append(
                ToolCallDelta(event.index, event.arguments, event.id, event.name)
            )
    return delta


@dataclass
class ChatOutput:
    """A whole message, added up from deltas."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    def add(self, delta: OutputDelta) -> None:
        self.reasoning += delta.reasoning
        self.content += delta.content
        for piece in delta.tool_calls:
            if piece.index == len(self.tool_calls):
                self.tool_calls.append(ToolCall(piece.id or "", piece.name or "", ""))
            self.tool_calls[piece.index].arguments += piece.arguments
