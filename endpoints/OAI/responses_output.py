"""An answer's output items, built from the chat output parser's deltas, and its stream events.

Reasoning becomes a ``reasoning`` item, text a ``message`` item with one ``output_text`` part,
each tool call a ``function_call`` item; an item is closed when the next kind of output starts.
Text that is only whitespace between items (after the reasoning block, around calls) opens no
message. Streamed and whole answers are built by the same steps, so they agree, but for one
case: a whole answer is parsed at once, so its items come as reasoning, message, calls, while a
stream lists them as they come (text after a call, such as a second call cut short, comes last).
The events are what the Responses API streams, each with its ``sequence_number``.
"""

from __future__ import annotations

from typing import Any

from common.chat.output import OutputDelta
from common.chat.tools.calls import ToolCallDelta
from endpoints.OAI.shapes import new_id
from endpoints.OAI.types.chat import ChatMessage, FunctionCall, ToolCall
from endpoints.OAI.types.responses import (
    FunctionCallItem,
    MessageItem,
    OutputItem,
    OutputText,
    ReasoningItem,
    ReasoningText,
)

Event = dict[str, Any]


def dumped(model: Any) -> Any:
    """A response piece as the JSON an event carries."""
    return model.model_dump(mode="json", by_alias=True)


class OutputBuilder:
    """The output items of one answer; every step returns the stream events it makes."""

    def __init__(self, namespaces: dict[str, str] | None = None) -> None:
        self.namespaces = namespaces or {}  # function name -> its namespace tool
        self.items: list[OutputItem] = []
        self._open: OutputItem | None = None
        self._calls: dict[int, FunctionCallItem] = {}  # by the parser's call index
        self._pending = ""  # whitespace that may yet start a message
        self._sequence = 0

    def event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _on(self, kind: str, item: OutputItem, **fields: Any) -> Event:
        """An event about ``item``: its id and output index, then ``fields``."""
        return self.event(kind, item_id=item.id, output_index=self._index(item), **fields)

    def feed(self, delta: OutputDelta) -> list[Event]:
        events: list[Event] = []
        if delta.reasoning:
            events += self._reasoning(delta.reasoning)
        if delta.content:
            events += self._text(delta.content)
        for piece in delta.tool_calls:
            events += self._call(piece)
        return events

    def finish(self, incomplete: bool) -> list[Event]:
        """Close the last item (``incomplete``: cut off by max_output_tokens). An answer with
        no item at all gets an (empty) message."""
        events: list[Event] = []
        if not self.items:
            events += self._add(
                MessageItem(id=new_id("msg", "_"), status="in_progress", content=[])
            )
            events += self._delta(self._pending)
        if incomplete and self._open is not None:
            self._open.status = "incomplete"
        return events + self._close()

    def message(self) -> ChatMessage:
        """The answer as the assistant message of the conversation it continues."""
        text = "".join(
            part.text
            for item in self.items
            if isinstance(item, MessageItem)
            for part in item.content
        )
        reasoning = "".join(
            part.text
            for item in self.items
            if isinstance(item, ReasoningItem)
            for part in item.content
        )
        calls = [
            ToolCall(
                id=item.call_id, function=FunctionCall(name=item.name, arguments=item.arguments)
            )
            for item in self.items
            if isinstance(item, FunctionCallItem)
        ]
        return ChatMessage(
            role="assistant",
            content=text or None,
            reasoning_content=reasoning or None,
            tool_calls=calls or None,
        )

    def _index(self, item: OutputItem) -> int:
        return next(i for i, known in enumerate(self.items) if known is item)

    def _add(self, item: OutputItem) -> list[Event]:
        events = self._close()
        self.items.append(item)
        self._open = item
        index = len(self.items) - 1
        events.append(
            self.event("response.output_item.added", output_index=index, item=dumped(item))
        )
        if isinstance(item, MessageItem):
            item.content.append(OutputText(text=""))
            events.append(
                self._on(
                    "response.content_part.added",
                    item,
                    content_index=0,
                    part=dumped(item.content[0]),
                )
            )
        elif isinstance(item, ReasoningItem):
            item.content.append(ReasoningText(text=""))
        return events

    def _close(self) -> list[Event]:
        item, self._open = self._open, None
        if item is None:
            return []
        index = self._index(item)
        events: list[Event] = []
        if isinstance(item, MessageItem):
            part = item.content[0]
            events.append(
                self._on(
                    "response.output_text.done", item, content_index=0, text=part.text, logprobs=[]
                )
            )
            events.append(
                self._on("response.content_part.done", item, content_index=0, part=dumped(part))
            )
        elif isinstance(item, ReasoningItem):
            events.append(
                self._on(
                    "response.reasoning_text.done", item, content_index=0, text=item.content[0].text
                )
            )
        else:
            events.append(
                self._on(
                    "response.function_call_arguments.done",
                    item,
                    name=item.name,
                    arguments=item.arguments,
                )
            )
        if item.status == "in_progress":
            item.status = "completed"
        events.append(
            self.event("response.output_item.done", output_index=index, item=dumped(item))
        )
        return events

    def _reasoning(self, text: str) -> list[Event]:
        events: list[Event] = []
        item = self._open
        if not isinstance(item, ReasoningItem):
            item = ReasoningItem(id=new_id("rs", "_"), status="in_progress", content=[])
            events += self._add(item)
        item.content[0].text += text
        events.append(self._on("response.reasoning_text.delta", item, content_index=0, delta=text))
        return events

    def _text(self, text: str) -> list[Event]:
        if isinstance(self._open, MessageItem):
            return self._delta(text)
        self._pending += text
        if not self._pending.strip():
            return []
        events = self._add(MessageItem(id=new_id("msg", "_"), status="in_progress", content=[]))
        return events + self._delta(self._pending)

    def _delta(self, text: str) -> list[Event]:
        item = self._open
        assert isinstance(item, MessageItem)
        self._pending = ""
        if not text:
            return []
        item.content[0].text += text
        return [
            self._on("response.output_text.delta", item, content_index=0, delta=text, logprobs=[])
        ]

    def _call(self, piece: ToolCallDelta) -> list[Event]:
        events: list[Event] = []
        item = self._calls.get(piece.index)
        if item is None:
            item = FunctionCallItem(
                id=new_id("fc", "_"),
                status="in_progress",
                call_id=piece.id or new_id("call", "_"),
                name=piece.name or "",
                arguments="",
                namespace=self.namespaces.get(piece.name or ""),
            )
            self._calls[piece.index] = item
            self._pending = ""
            events += self._add(item)
        if piece.arguments:
            item.arguments += piece.arguments
            events.append(
                self._on("response.function_call_arguments.delta", item, delta=piece.arguments)
            )
        return events
