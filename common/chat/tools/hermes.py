"""Hermes / Qwen calls: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, repeated.

The format of Hermes 2 Pro and 3, Qwen 2.5, Qwen 3 and many ChatML fine-tunes, and Serval's
choice for templates that name no format of their own.
"""

from __future__ import annotations

from common.chat.tools.parser import ToolCallParser

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


class HermesParser(ToolCallParser):
    def _step(self) -> bool:
        shared = self._tagged_json_call(OPEN, after_call="close")
        if shared is not None:
            return shared
        # close: the end tag, which a model may also leave out (or be cut off in)
        self._skip_space()
        if not self._buffer and not self._final:
            return False
        if self._final and CLOSE.startswith(self._buffer):
            self._buffer = ""
        if self._starts_with(CLOSE) is None:
            return False
        self._state = "text"
        return True
