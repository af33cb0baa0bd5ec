"""Turning token ids into streamed text: incremental decoding and stop / banned string matching.

Used by engines that sample token by token themselves (the transformers engine). Text is only
released when it is final: not a partial UTF-8 character, and not a possible beginning of a stop
string or banned string, so nothing that was streamed is ever taken back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

Decode = Callable[[list[int]], str]


class IncrementalDecoder:
    """Decodes a growing list of token ids into text deltas, holding partial characters.

    Decoding a window of a few tokens before the new ones keeps tokenizers that add or drop
    leading spaces (SentencePiece) from changing the text already produced.
    """

    def __init__(self, decode: Decode, context_ids: Sequence[int] = ()) -> None:
        self._decode = decode
        self.ids: list[int] = list(context_ids[-4:])
        self._prefix_offset = 0
        self._read_offset = len(self.ids)

    def push(self, token_ids: Sequence[int]) -> str:
        """Add tokens and return the text they complete (maybe empty)."""
        self.ids.extend(token_ids)
        prefix = self._decode(self.ids[self._prefix_offset : self._read_offset])
        full = self._decode(self.ids[self._prefix_offset :])
        if len(full) <= len(prefix) or full.endswith("\ufffd"):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self.ids)
        return full[len(prefix) :]

    def rewind(self, count: int) -> None:
        """Forget the last ``count`` tokens (their text must not have been released)."""
        if count <= 0:
            return
        del self.ids[len(self.ids) - count :]
        self._read_offset = min(self._read_offset, len(self.ids))
        self._prefix_offset = min(self._prefix_offset, self._read_offset)

    def flush(self) -> str:
        """Text still held at the end (a partial character becomes U+FFFD)."""
        prefix = self._decode(self.ids[self._prefix_offset : self._read_offset])
        full = self._decode(self.ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self.ids)
        return full[len(prefix) :]


def _held_suffix(text: str, patterns: Sequence[str], fold: bool) -> int:
    """Length of the longest end of ``text`` that could start one of ``patterns``."""
    haystack = text.lower() if fold else text
    longest = 0
    for pattern in patterns:
        needle = pattern.lower() if fold else pattern
        for size in range(min(len(needle) - 1, len(haystack)), longest, -1):
            if haystack.endswith(needle[:size]):
                longest = size
                break
    return longest


@dataclass
class StopMatch:
    """A stop string appeared: ``text`` is what comes before it and may still be released."""

    text: str
    stop_string: str


@dataclass
class BannedMatch:
    """A banned string appeared: drop the last ``tokens_back`` tokens and try again."""

    tokens_back: int
    banned: str


class TextGate:
    """Holds text back until it can neither become a stop string nor a banned string.

    Feed it the text of each new token (maybe empty). ``feed`` returns the text that may be
    released now, and a match when one happened: a stop string ends the text (what follows it
    is dropped); a banned string asks the caller to drop tokens and backtrack. Text held for a
    banned string is held from a token boundary, so a backtrack never takes back released text.
    Banned strings are matched case-insensitively, as ExLlamaV2 does.
    """

    def __init__(self, stop_strings: Sequence[str] = (), banned_strings: Sequence[str] = ()):
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.banned_strings = tuple(s for s in banned_strings if s)
        self.pending = ""
        self._starts: list[int] = []

    def feed(self, text: str) -> tuple[str, StopMatch | BannedMatch | None]:
        self._starts.append(len(self.pending))
        self.pending += text
        banned = self._find_banned()
        stop = self._find_stop()
        if banned is not None and (stop is None or banned[0] < stop[0]):
            start, word = banned
            first = max((i for i, s in enumerate(self._starts) if s <= start), default=0)
            # Tokens that added no text (part of a character) belong to the text after them.
            while first > 0 and self._starts[first - 1] == self._starts[first]:
                first -= 1
            tokens_back = len(self._starts) - first
            self.pending = self.pending[: self._starts[first]]
            del self._starts[first:]
            return "", BannedMatch(tokens_back, word)
        if stop is not None:
            index, word = stop
            released = self.pending[:index]
            self.pending, self._starts = "", []
            return "", StopMatch(released, word)
        cut = len(self.pending) - _held_suffix(self.pending, self.stop_strings, fold=False)
        banned_hold = _held_suffix(self.pending, self.banned_strings, fold=True)
        if banned_hold:
            hold_from = len(self.pending) - banned_hold
            cut = min(cut, max((s for s in self._starts if s <= hold_from), default=0))
        released = self.pending[:cut]
        self.pending = self.pending[cut:]
        self._starts = [s - cut for s in self._starts if s >= cut]
        return released, None

    def _find_stop(self) -> tuple[int, str] | None:
        found: tuple[int, str] | None = None
        for word in self.stop_strings:
            index = self.pending.find(word)
            if index >= 0 and (found is None or index < found[0]):
                found = (index, word)
        return found

    def _find_banned(self) -> tuple[int, str] | None:
        lowered = self.pending.lower()
        found: tuple[int, str] | None = None
        for word in self.banned_strings:
            index = lowered.find(word.lower())
            if index >= 0 and (found is None or index < found[0]):
                found = (index, word)
        return found

    def flush(self) -> str:
        released, self.pending, self._starts = self.pending, "", []
        return released
