"""TextGate: banned strings are held back and backtracked over whole tokens, never streamed."""

from __future__ import annotations

from backends.text_stream import BannedMatch, StopMatch, TextGate


def feed_all(gate: TextGate, pieces: list[str]) -> tuple[str, list[object]]:
    released, matches = "", []
    for piece in pieces:
        text, match = gate.feed(piece)
        released += text
        if match is not None:
            matches.append(match)
    return released, matches


def test_text_that_could_start_a_banned_string_is_held() -> None:
    gate = TextGate(banned_strings=["forbidden"])
    released, matches = feed_all(gate, ["It is ", "for"])
    assert released == "It is " and not matches
    assert gate.pending == "for"


def test_a_banned_string_asks_to_drop_the_tokens_that_formed_it() -> None:
    gate = TextGate(banned_strings=["forbidden"])
    released, _ = feed_all(gate, ["It is ", "for", "bid"])
    text, match = gate.feed("den fruit")
    assert released == "It is " and text == ""
    assert match == BannedMatch(tokens_back=3, banned="forbidden")
    assert gate.pending == ""


def test_banned_strings_match_without_case() -> None:
    gate = TextGate(banned_strings=["Apple"])
    _, match = gate.feed(" aPPle")
    assert isinstance(match, BannedMatch) and match.tokens_back == 1


def test_backtracking_includes_tokens_that_were_part_of_a_character() -> None:
    """A token that produced no text (half a character) goes back with the text it completes."""
    gate = TextGate(banned_strings=["é!"])
    feed_all(gate, ["x"])
    _, matches = feed_all(gate, ["", "é", "!"])
    assert matches == [BannedMatch(tokens_back=3, banned="é!")]


def test_released_text_is_never_taken_back() -> None:
    gate = TextGate(banned_strings=["bad"])
    released, _ = feed_all(gate, ["good ", "b"])
    text, match = gate.feed("ad")
    assert released == "good " and text == ""
    assert isinstance(match, BannedMatch) and match.tokens_back == 2


def test_a_stop_string_before_a_banned_one_ends_the_text() -> None:
    gate = TextGate(stop_strings=["END"], banned_strings=["bad"])
    _, match = gate.feed("okEND bad")
    assert match == StopMatch(text="ok", stop_string="END")
