"""Streaming text: partial characters, stop strings across tokens, banned-string backtracking."""

from __future__ import annotations

from backends.text_stream import BannedMatch, IncrementalDecoder, StopMatch, TextGate

# A toy byte-level "tokenizer": each id is one byte, so characters can split across tokens.
ALPHABET = "héllo wörld, stop here 👋"
DATA = ALPHABET.encode("utf-8")


def decode(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def test_partial_characters_are_held_until_complete() -> None:
    decoder = IncrementalDecoder(decode)
    pieces = [decoder.push([byte]) for byte in DATA]
    assert "".join(pieces) + decoder.flush() == ALPHABET
    assert all("\ufffd" not in piece for piece in pieces)
    emoji = "👋".encode()
    assert pieces[-len(emoji) : -1] == [""] * (len(emoji) - 1)


def _feed_all(gate: TextGate, pieces: list[str]) -> tuple[str, object]:
    out = ""
    for piece in pieces:
        released, match = gate.feed(piece)
        out += released
        if match is not None:
            return out, match
    return out + gate.flush(), None


def test_stop_string_split_across_tokens_is_caught_and_never_streamed() -> None:
    gate = TextGate(stop_strings=["STOP"])
    out, match = _feed_all(gate, ["one ", "two S", "T", "OP three"])
    assert isinstance(match, StopMatch)
    assert out + match.text == "one two "
    assert "S" not in out


def test_text_that_only_looks_like_a_stop_is_released() -> None:
    gate = TextGate(stop_strings=["STOP"])
    out, match = _feed_all(gate, ["ST", "ILL ", "going"])
    assert match is None
    assert out == "STILL going"


def test_banned_string_asks_to_drop_the_tokens_that_formed_it() -> None:
    gate = TextGate(banned_strings=["bad word"])
    released = []
    for piece in ["a ", "ba", "d", " wo"]:
        text, match = gate.feed(piece)
        released.append(text)
        assert match is None
    text, match = gate.feed("rd!")
    assert isinstance(match, BannedMatch)
    assert match.tokens_back == 4  # "ba", "d", " wo", "rd!"
    assert "".join(released) == "a "  # nothing of the banned string was released
    # After backtracking the generation continues cleanly.
    text, match = gate.feed("nice")
    assert match is None
    assert text + gate.flush() == "nice"


def test_banned_strings_match_case_insensitively() -> None:
    gate = TextGate(banned_strings=["Paris"])
    _, match = _feed_all(gate, ["It is ", "PAR", "IS"])
    assert isinstance(match, BannedMatch)
