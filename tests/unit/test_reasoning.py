"""Reasoning split from the answer, tags split anywhere; the prompt that opens the block."""

from __future__ import annotations

import pytest

from common.chat.output import ChatOutput, ChatOutputParser
from common.chat.reasoning import ReasoningSplitter, prompt_opens_reasoning
from common.chat.tools.formats import FORMATS
from tests.unit.test_tool_parsers import splits


def split(text: str, pieces: list[str], in_reasoning: bool, start="<think>", end="</think>"):
    splitter = ReasoningSplitter(start, end, in_reasoning)
    reasoning = content = ""
    for piece in pieces:
        r, c = splitter.feed(piece)
        reasoning, content = reasoning + r, content + c
    r, c = splitter.finish()
    return reasoning + r, content + c


@pytest.mark.parametrize(
    ("text", "in_reasoning", "reasoning", "content"),
    [
        ("<think>\nLet me see.\n</think>\n\nParis.", False, "Let me see.", "Paris."),
        ("  <think>a < b, so</think>b", False, "a < b, so", "b"),
        ("Let me see.\n</think>\n\nParis.", True, "Let me see.", "Paris."),
        ("Still thinking when cut", True, "Still thinking when cut", ""),
        ("Paris. <think>quoted</think>", False, "", "Paris. <think>quoted</think>"),
        ("<thin", False, "", "<thin"),
        ("\n</think>\n", True, "", ""),
        ("one\n\ntwo</th", True, "one\n\ntwo</th", ""),
    ],
)
def test_split(text: str, in_reasoning: bool, reasoning: str, content: str) -> None:
    for pieces in splits(text):
        assert split(text, pieces, in_reasoning) == (reasoning, content), pieces


def test_multi_character_tags_of_other_models() -> None:
    text = "◁think▷hmm◁/think▷ok"
    for pieces in splits(text):
        assert split(text, pieces, False, "◁think▷", "◁/think▷") == ("hmm", "ok")


def test_reasoning_streams_before_the_end_tag() -> None:
    splitter = ReasoningSplitter("<think>", "</think>", True)
    assert splitter.feed("First, ") == ("First,", "")
    assert splitter.feed("the map.</") == (" the map.", "")
    assert splitter.in_reasoning
    assert splitter.feed("think>\n\nIt is") == ("", "It is")
    assert not splitter.in_reasoning


@pytest.mark.parametrize(
    ("prompt", "opens"),
    [
        ("<|im_start|>assistant\n<think>\n", True),
        ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False),
        ("<|im_start|>user\nWhat does <think> do?<|im_end|>\n<|im_start|>assistant\n", False),
        ("<|im_start|>assistant\n", False),
        ("assistant: <think>" + "x" * 300, False),
    ],
)
def test_prompt_opens_reasoning(prompt: str, opens: bool) -> None:
    assert prompt_opens_reasoning(prompt, "<think>", "</think>") is opens


def test_reasoning_then_tool_calls() -> None:
    text = (
        '<think>The user wants weather.</think>\n\n<tool_call>\n{"name": "w", "arguments": '
        '{"city": "Oslo"}}\n</tool_call>'
    )
    for pieces in splits(text):
        parser = ChatOutputParser(
            ReasoningSplitter("<think>", "</think>"), FORMATS["hermes"].make_parser()
        )
        output = ChatOutput()
        for piece in pieces:
            output.add(parser.feed(piece))
        output.add(parser.feed("", final=True))
        assert output.reasoning == "The user wants weather."
        assert output.content == ""
        assert [(c.name, c.arguments) for c in output.tool_calls] == [("w", '{"city": "Oslo"}')]


def test_tool_tags_inside_reasoning_stay_reasoning() -> None:
    parser = ChatOutputParser(
        ReasoningSplitter("<think>", "</think>", True), FORMATS["hermes"].make_parser()
    )
    output = ChatOutput()
    output.add(parser.feed('Maybe <tool_call>{"name": "x"}</tool_call>?</think>No.', final=True))
    assert output.reasoning == 'Maybe <tool_call>{"name": "x"}</tool_call>?'
    assert output.content == "No." and output.tool_calls == []
