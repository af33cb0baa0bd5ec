"""Splitting a reasoning model's output into its reasoning and its answer.

The reasoning is the text between a start and an end tag (``<think>`` and ``</think>`` by
default) at the very start of the answer; many templates write the start tag into the prompt
themselves, so the answer may begin inside the block. Tags can arrive split across any number
of text pieces. Whitespace around the reasoning, and between it and the answer, is dropped.
"""

from __future__ import annotations

import re

from common.chat.tools.json_scan import WHITESPACE
from common.chat.tools.parser import partial_tag_length

# How far back from the end of a prompt an unclosed start tag counts as opening the answer.
OPEN_TAG_WINDOW = 256
_OTHER_TAG = re.compile(r"<[^<>\s]{1,64}>|<\|")


def prompt_opens_reasoning(prompt: str, start_tag: str, end_tag: str) -> bool:
    """Whether the prompt ends inside a reasoning block the template opened.

    The last start tag must be unclosed, near the end, and followed by no other tag (so a
    start tag quoted in an earlier message does not count).
    """
    found = prompt.rfind(start_tag)
    if found < 0:
        return False
    tail = prompt[found + len(start_tag) :]
    if end_tag in tail or len(tail) > OPEN_TAG_WINDOW:
        return False
    return _OTHER_TAG.search(tail) is None


class ReasoningSplitter:
    """Feeds text in, gets ``(reasoning, content)`` pieces out."""

    def __init__(self, start_tag: str, end_tag: str, in_reasoning: bool = False) -> None:
        self.start_tag = start_tag
        self.end_tag = end_tag
        self._state = "reasoning_start" if in_reasoning else "start"
        self._buffer = ""
        self._final = False

    @property
    def in_reasoning(self) -> bool:
        return self._state in ("reasoning_start", "reasoning")

    def feed(self, text: str) -> tuple[str, str]:
        self._buffer += text
        return self._run()

    def finish(self) -> tuple[str, str]:
        self._final = True
        reasoning, content = self._run()
        if self._state == "reasoning":
            reasoning += self._buffer.rstrip(WHITESPACE)
        elif self._state in ("start", "content"):
            content += self._buffer
        self._buffer = ""
        return reasoning, content

    def _run(self) -> tuple[str, str]:
        reasoning = content = ""
        while True:
            state = self._state
            if state == "start":
                if not self._open():
                    break
            elif state in ("reasoning_start", "content_start"):
                self._buffer = self._buffer.lstrip(WHITESPACE)
                if not self._buffer:
                    break
                self._state = "reasoning" if state == "reasoning_start" else "content"
            elif state == "reasoning":
                piece, closed = self._reasoning()
                reasoning += piece
                if not closed:
                    break
            else:
                content += self._buffer
                self._buffer = ""
                break
        return reasoning, content

    def _open(self) -> bool:
        """At the start: the block opens, or the answer begins without one."""
        text = self._buffer.lstrip(WHITESPACE)
        if text.startswith(self.start_tag):
            self._buffer = text[len(self.start_tag) :]
            self._state = "reasoning_start"
            return True
        if not self._final and self.start_tag.startswith(text):
            return False
        self._state = "content"
        return True

    def _reasoning(self) -> tuple[str, bool]:
        """Reasoning up to the end tag; trailing whitespace is held until text follows it."""
        found = self._buffer.find(self.end_tag)
        if found >= 0:
            piece = self._buffer[:found].rstrip(WHITESPACE)
            self._buffer = self._buffer[found + len(self.end_tag) :]
            self._state = "content_start"
            return piece, True
        keep = partial_tag_length(self._buffer, self.end_tag)
        piece = self._buffer[: len(self._buffer) - keep].rstrip(WHITESPACE)
        self._buffer = self._buffer[len(piece) :]
        return piece, False
