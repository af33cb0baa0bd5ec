"""Llama 3.1+ JSON calls: ``{"name": ..., "parameters": {...}}``, maybe after ``<|python_tag|>``.

A call is a JSON object at the start of the answer (or after the python tag); more calls may
follow, separated by ``;`` or new lines. An object without a ``name`` and an ``arguments`` or
``parameters`` key is content, so a JSON answer stays an answer.
"""

from __future__ import annotations

from common.chat.tools.parser import ToolCallParser

PYTHON_TAG = "<|python_tag|>"


class Llama3Parser(ToolCallParser):
    def __init__(self) -> None:
        super().__init__()
        self._state = "start"

    def _step(self) -> bool:
        shared = self._tagged_json_call(PYTHON_TAG, after_call="between")
        if shared is not None:
            return shared
        return self._call_or_text()

    def _call_or_text(self) -> bool:
        """At the start or after a call: another call, or the content begins."""
        if self._state == "between":
            self._buffer = self._buffer.lstrip(" \t\r\n;")
        else:
            space = len(self._buffer) - len(self._buffer.lstrip(" \t\r\n"))
            self._content(self._buffer[:space])
            self._buffer = self._buffer[space:]
        if not self._buffer:
            if self._final:
                self._state = "text"
            return False
        tagged = self._starts_with(PYTHON_TAG)
        if tagged is None:
            return False
        if tagged or self._buffer.startswith("{"):
            self._begin_json_call(prefix=PYTHON_TAG if tagged else "", require_arguments=True)
            self._state = "call"
        else:
            self._state = "text"
        return True
