"""Mistral calls: ``[TOOL_CALLS]`` and then a JSON list of calls (v3 tokenizers) or
``name[ARGS]{...}`` (v11 and later, one call per ``[TOOL_CALLS]``)."""

from __future__ import annotations

from common.chat.tools.json_scan import JsonValueScanner
from common.chat.tools.parser import ToolCallParser

TOOL_CALLS = "[TOOL_CALLS]"
ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"
MAX_NAME = 256


class MistralParser(ToolCallParser):
    def __init__(self) -> None:
        super().__init__()
        self._state = "text"
        self._arguments: JsonValueScanner | None = None

    def _step(self) -> bool:
        state = self._state
        if state == "text":
            if not self._content_until(TOOL_CALLS):
                return False
            self._state = "after_tag"
            return True
        if state == "call":
            result = self._read_json_call()
            if result == "more":
                return False
            self._state = "list_next" if result == "done" else "text"
            return True
        if state == "arguments":
            return self._read_arguments()
        self._skip_space()
        if not self._buffer:
            if self._final:
                self._state = "text"
                return True
            return False
        if state == "after_tag":
            if self._buffer.startswith("["):
                self._buffer = self._buffer[1:]
                self._state = "list_item"
            else:
                self._state = "name"
                return self._read_name()
            return True
        if state == "name":
            return self._read_name()
        if state == "list_item" and self._buffer.startswith("{"):
            self._begin_json_call()
            self._state = "call"
        elif state == "list_next" and self._buffer.startswith(","):
            self._buffer = self._buffer[1:]
            self._state = "list_item"
        else:  # the end of the list (or something that is not a call)
            if self._buffer.startswith("]"):
                self._buffer = self._buffer[1:]
            self._state = "text"
        return True

    def _read_name(self) -> bool:
        """``name[ARGS]`` (maybe ``name[CALL_ID]id[ARGS]``) of the v11 format."""
        found = self._buffer.find(ARGS)
        if found < 0:
            if len(self._buffer) > MAX_NAME or self._final:
                self._content(TOOL_CALLS + self._buffer)
                self._buffer = ""
                self._state = "text"
                return True
            return False
        name = self._buffer[:found].split(CALL_ID)[0].strip()
        self._buffer = self._buffer[found + len(ARGS) :]
        self._open_call(name)
        self._arguments = JsonValueScanner()
        self._state = "arguments"
        return True

    def _read_arguments(self) -> bool:
        scanner = self._arguments
        assert scanner is not None
        if not scanner.kind:
            self._skip_space()
        used = scanner.feed(self._buffer)
        self._add_arguments(self._buffer[:used])
        self._buffer = self._buffer[used:]
        if scanner.done or scanner.failed or self._final:
            self._arguments = None
            self._state = "text"
            return True
        return False
