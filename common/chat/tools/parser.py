"""The streaming tool-call parser every format builds on.

Text arrives in arbitrary pieces (a tag may be split across several). A parser keeps what it
cannot decide yet in a buffer and moves through the states of its format; whatever is certainly
content goes out at once, and a call goes out as soon as its name is known, followed by its
arguments as they are written. The same parser serves streamed and whole answers, so both
always agree.

Whitespace between content and calls is not content: an answer that is only calls has no
content, and ``"Sure.\\n<tool_call>..."`` has the content ``"Sure."``.
"""

from __future__ import annotations

import abc

from common.chat.tools.calls import ContentDelta, ParserEvent, ToolCallDelta, new_call_id
from common.chat.tools.json_scan import WHITESPACE, JsonCallScanner


def partial_tag_length(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is the start of ``tag`` (but not all of it)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ToolCallParser(abc.ABC):
    """Splits generated text into content and tool calls, one piece at a time."""

    def __init__(self) -> None:
        self.calls = 0
        self._buffer = ""
        self._events: list[ParserEvent] = []
        self._held_space = ""
        self._after_call = False  # content right after a call drops its leading whitespace
        self._content_seen = False
        self._final = False
        self._scanner: JsonCallScanner | None = None
        self._scanner_prefix = ""
        self._require_arguments = False
        self._call_index: int | None = None
        self._state = "text"  # where the format's state machine is

    def feed(self, text: str) -> list[ParserEvent]:
        self._buffer += text
        while self._step():
            pass
        return self._take()

    def finish(self) -> list[ParserEvent]:
        """The text ended: everything still held is decided."""
        self._final = True
        while self._step():
            pass
        if self._buffer:
            self._content(self._buffer)
            self._buffer = ""
        if self._held_space and not self.calls:
            self._events.append(ContentDelta(self._held_space))
        self._held_space = ""
        return self._take()

    @abc.abstractmethod
    def _step(self) -> bool:
        """Work on the buffer in the current state; True when something changed."""

    # ----- helpers for the formats ----------------------------------------------------------

    def _take(self) -> list[ParserEvent]:
        events, self._events = self._events, []
        return events

    def _content(self, text: str) -> None:
        if self._after_call:
            text = text.lstrip(WHITESPACE)
            self._after_call = not text
        body = text.rstrip(WHITESPACE)
        if body:
            self._content_seen = True
            self._events.append(ContentDelta(self._held_space + body))
            self._held_space = ""
        self._held_space += text[len(body) :]

    def _content_until(self, tag: str) -> bool:
        """Pass content on up to ``tag`` and consume the tag: True when it was found."""
        found = self._buffer.find(tag)
        if found >= 0:
            self._content(self._buffer[:found])
            self._buffer = self._buffer[found + len(tag) :]
            return True
        keep = 0 if self._final else partial_tag_length(self._buffer, tag)
        self._content(self._buffer[: len(self._buffer) - keep])
        self._buffer = self._buffer[len(self._buffer) - keep :]
        return False

    def _skip_space(self) -> None:
        self._buffer = self._buffer.lstrip(WHITESPACE)

    def _starts_with(self, tag: str) -> bool | None:
        """Consume ``tag`` at the start of the buffer: True, False, or None while undecided."""
        if self._buffer.startswith(tag):
            self._buffer = self._buffer[len(tag) :]
            return True
        if not self._final and tag.startswith(self._buffer):
            return None
        return False

    def _open_call(self, name: str, arguments: str = "") -> None:
        self._held_space = ""
        self._after_call = not self._content_seen
        self._call_index = self.calls
        self.calls += 1
        self._events.append(ToolCallDelta(self._call_index, arguments, id=new_call_id(), name=name))

    def _add_arguments(self, text: str) -> None:
        if text and self._call_index is not None:
            self._events.append(ToolCallDelta(self._call_index, text))

    def _begin_json_call(self, prefix: str = "", require_arguments: bool = False) -> None:
        """Start reading a JSON call; ``prefix`` is the text that opened it (content again if
        what follows is not a call), ``require_arguments`` waits for an arguments key before
        calling it a call (for formats without a tag that marks calls)."""
        self._scanner = JsonCallScanner()
        self._scanner_prefix = prefix
        self._require_arguments = require_arguments
        self._call_index = None

    def _call_ready(self, scanner: JsonCallScanner) -> bool:
        if not scanner.name or scanner.failed:
            return False
        if self._require_arguments:
            return scanner.saw_arguments
        return True

    def _tagged_json_call(self, tag: str, after_call: str) -> bool | None:
        """The two states formats share: ``text`` (content until ``tag``, which opens a JSON
        call) and ``call`` (reading it, then ``after_call``). None in any other state."""
        if self._state == "text":
            if not self._content_until(tag):
                return False
            self._begin_json_call(prefix=tag)
            self._state = "call"
            return True
        if self._state == "call":
            result = self._read_json_call()
            if result == "more":
                return False
            self._state = after_call if result == "done" else "text"
            return True
        return None

    def _read_json_call(self) -> str:
        """Feed the buffer to the call being read: ``done``, ``failed`` or ``more``."""
        scanner = self._scanner
        assert scanner is not None
        self._buffer = self._buffer[scanner.feed(self._buffer) :]
        if self._final and not (scanner.done or scanner.failed):
            scanner.close()
        if self._call_index is None and self._call_ready(scanner):
            self._open_call(scanner.name or "", scanner.take_arguments())
        if self._call_index is not None:
            self._add_arguments(scanner.take_arguments())
        finished = scanner.done or self._final
        if scanner.failed or (finished and self._call_index is None):
            if self._call_index is None:
                self._content(self._scanner_prefix + scanner.raw)
            self._scanner = None
            return "failed"
        if finished:
            self._scanner = None
            return "done"
        return "more"
