"""Finding where JSON ends in text that arrives in pieces, so tool calls can stream.

A model writes a call as ``{"name": "f", "arguments": {...}}`` one token at a time. These
scanners read it character by character: the name is known as soon as its string closes, and
the text of the arguments can be passed on while it is still being written. They check the
structure (brackets, strings, keys) but leave the values to ``json.loads``.
"""

from __future__ import annotations

import json

WHITESPACE = " \t\r\n"
_SCALAR_END = ",}]" + WHITESPACE
_CLOSING = {"{": "}", "[": "]"}


class JsonValueScanner:
    """Follows one JSON value from its first character to its end.

    ``feed`` returns how many characters of the text belong to the value; the value is over when
    ``done`` is set (a number, ``true`` or ``null`` ends at the character after it, or at
    :meth:`close`), and ``failed`` is set on a character JSON cannot have there.
    """

    def __init__(self) -> None:
        self.kind = ""  # "container", "string" or "scalar", from the first character
        self._open: list[str] = []
        self._in_string = False
        self._escaped = False
        self.done = False
        self.failed = False

    def feed(self, text: str) -> int:
        for position, char in enumerate(text):
            if self.done or self.failed:
                return position
            if not self.kind:
                self._first(char)
            elif self.kind == "scalar":
                if char in _SCALAR_END:
                    self.done = True
                    return position
            elif self._in_string:
                self._string_char(char)
            else:
                self._container_char(char)
        return len(text)

    def close(self) -> None:
        """The text ended: a number or keyword at the end is complete."""
        if self.kind == "scalar":
            self.done = True

    def _first(self, char: str) -> None:
        if char in "{[":
            self.kind = "container"
            self._open.append(char)
        elif char == '"':
            self.kind = "string"
            self._in_string = True
        elif char in "-0123456789tfn":
            self.kind = "scalar"
        else:
            self.failed = True

    def _string_char(self, char: str) -> None:
        if self._escaped:
            self._escaped = False
        elif char == "\\":
            self._escaped = True
        elif char == '"':
            self._in_string = False
            if not self._open:
                self.done = True

    def _container_char(self, char: str) -> None:
        if char == '"':
            self._in_string = True
        elif char in "{[":
            self._open.append(char)
        elif char in "}]":
            if _CLOSING[self._open.pop()] != char:
                self.failed = True
            elif not self._open:
                self.done = True


class JsonCallScanner:
    """Reads one ``{"name": ..., "arguments": ...}`` object (``parameters`` is the same).

    After each ``feed``, ``name`` holds the function name once it is known and
    :meth:`take_arguments` the argument text written since the last call: the raw text of an
    object as it is generated, or the decoded text of arguments sent as a JSON string.
    ``raw`` is everything consumed, for when the text turns out not to be a call after all.
    """

    ARGUMENT_KEYS = ("arguments", "parameters")

    def __init__(self) -> None:
        self.raw = ""
        self.name: str | None = None
        self.saw_arguments = False
        self.done = False
        self.failed = False
        self._state = "start"
        self._key = ""
        self._key_scanner = JsonValueScanner()
        self._value: JsonValueScanner | None = None
        self._value_text = ""
        self._arguments = ""

    def take_arguments(self) -> str:
        taken, self._arguments = self._arguments, ""
        return taken

    def feed(self, text: str) -> int:
        """Consume ``text`` up to the end of the object; returns how much was used."""
        position = 0
        while position < len(text) and not (self.done or self.failed):
            if self._state == "value":
                used = self._feed_value(text[position:])
                self.raw += text[position : position + used]
                position += used
                continue
            if self._step(text[position]):
                self.raw += text[position]
                position += 1
        return position

    def close(self) -> None:
        """The text ended; a call cut short keeps what it had."""
        if self._state == "value" and self._value is not None:
            self._value.close()
            if self._value.done:
                self._end_value()

    def _step(self, char: str) -> bool:
        """Handle one character outside values; False when it starts a value instead."""
        state = self._state
        if char in WHITESPACE and state != "key":
            return True
        if state == "start":
            return self._expect(char == "{", "key_or_end")
        if state == "key_or_end" and char == "}":
            return self._finish()
        if state in ("key_or_end", "key_start"):
            if char != '"':
                return self._fail()
            self._state, self._key, self._key_scanner = "key", "", JsonValueScanner()
        if state == "key" or self._state == "key":
            self._key += char
            self._key_scanner.feed(char)
            if self._key_scanner.done:
                self._state = "colon"
            return True
        if state == "colon":
            return self._expect(char == ":", "value_start")
        if state == "value_start":
            self._state, self._value, self._value_text = "value", JsonValueScanner(), ""
            return False
        if char == ",":  # after_value
            self._state = "key_start"
            return True
        return self._finish() if char == "}" else self._fail()

    def _feed_value(self, text: str) -> int:
        assert self._value is not None
        used = self._value.feed(text)
        piece = text[:used]
        if self._value.failed:
            self._fail()
            return used
        key = self._key_name()
        if key in self.ARGUMENT_KEYS and self._value.kind == "container":
            self.saw_arguments = True
            self._arguments += piece
        else:
            self._value_text += piece
        if self._value.done:
            self._end_value()
        return used

    def _end_value(self) -> None:
        key = self._key_name()
        text = self._value_text
        self._state, self._value = "after_value", None
        if key == "name":
            try:
                name = json.loads(text)
            except json.JSONDecodeError:
                name = None
            if not isinstance(name, str) or not name:
                self._fail()
                return
            self.name = name
        elif key in self.ARGUMENT_KEYS:
            self.saw_arguments = True
            self._arguments += _arguments_text(text)

    def _key_name(self) -> str:
        try:
            return str(json.loads(self._key))
        except json.JSONDecodeError:
            return ""

    def _expect(self, ok: bool, next_state: str) -> bool:
        if not ok:
            return self._fail()
        self._state = next_state
        return True

    def _finish(self) -> bool:
        self.done = True
        if not self.saw_arguments:
            self._arguments += "{}"
        return True

    def _fail(self) -> bool:
        self.failed = True
        return False


def _arguments_text(text: str) -> str:
    """Arguments that were not an object: a JSON string holding JSON, or null."""
    if not text:
        return ""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(value, str):
        return value
    return "{}" if value is None else text
