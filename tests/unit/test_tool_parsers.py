"""Tool-call parsers on hand-written model outputs, whole and split into pieces anywhere."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from common.chat.tools.calls import ContentDelta, ToolCallDelta
from common.chat.tools.formats import FORMATS, tool_format
from common.chat.tools.parser import ToolCallParser

Result = tuple[str, list[tuple[str, str]]]


def parse(make: Callable[[], ToolCallParser], pieces: list[str]) -> Result:
    """Content and (name, arguments) calls, checking the stream's shape on the way."""
    parser = make()
    content = ""
    calls: list[tuple[str, str]] = []
    ids: list[str] = []
    for event in [e for piece in pieces for e in parser.feed(piece)] + parser.finish():
        if isinstance(event, ContentDelta):
            assert event.text
            content += event.text
        else:
            assert isinstance(event, ToolCallDelta)
            if event.index == len(calls):
                assert event.name and event.id and event.id.startswith("call_")
                assert len(event.id) == 5 + 24
                calls.append((event.name, event.arguments))
                ids.append(event.id)
            else:
                assert event.id is None and event.name is None and event.arguments
                name, arguments = calls[event.index]
                calls[event.index] = (name, arguments + event.arguments)
    assert len(set(ids)) == len(ids)
    return content, calls


def splits(text: str) -> list[list[str]]:
    """The text whole, one character at a time, and cut in two at every position."""
    return [[text], list(text)] + [[text[:i], text[i:]] for i in range(1, len(text))]


def check(fmt: str, text: str, content: str, calls: list[tuple[str, object]]) -> None:
    make = FORMATS[fmt].make_parser
    for pieces in splits(text):
        got_content, got_calls = parse(make, pieces)
        assert got_content == content, pieces
        assert [(n, json.loads(a)) for n, a in got_calls] == calls, pieces


HERMES_ONE = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        (HERMES_ONE, "", [("get_weather", {"city": "Paris"})]),
        (
            "Let me look.\n" + HERMES_ONE + "\n",
            "Let me look.",
            [("get_weather", {"city": "Paris"})],
        ),
        (
            HERMES_ONE + "\n" + HERMES_ONE.replace("Paris", "Oslo"),
            "",
            [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})],
        ),
        (  # arguments first, as a JSON string, and braces inside strings
            '<tool_call>{"arguments": "{\\"q\\": \\"a}b\\"}", "name": "search"}</tool_call>',
            "",
            [("search", {"q": "a}b"})],
        ),
        ('<tool_call>{"name": "now"}</tool_call>', "", [("now", {})]),
        (HERMES_ONE + "\n\nDone.\n", "Done.", [("get_weather", {"city": "Paris"})]),
        ("Sure.\n" + HERMES_ONE + "\nDone.", "Sure.\nDone.", [("get_weather", {"city": "Paris"})]),
        ("No tools needed: 2 < 3 and <tool_cal is not a tag.", None, []),
        ("<tool_call>not json</tool_call>", None, []),
        (
            '<tool_call>\n{"name": "f", "arguments": {"a": [1, {"b": 2}]}}',
            "",
            [("f", {"a": [1, {"b": 2}]})],
        ),
    ],
)
def test_hermes(text: str, content: str | None, calls: list) -> None:
    check("hermes", text, text if content is None else content, calls)


def test_hermes_streams_the_name_first_and_arguments_as_they_come() -> None:
    parser = FORMATS["hermes"].make_parser()
    assert parser.feed('<tool_call>\n{"name": "get_wea') == []
    first = parser.feed('ther", "arguments": {"ci')
    assert len(first) == 1 and first[0].name == "get_weather" and first[0].arguments == '{"ci'
    assert [e.arguments for e in parser.feed('ty": "Par')] == ['ty": "Par']
    assert [e.arguments for e in parser.feed('is"}}\n</tool')] == ['is"}']
    assert parser.feed("_call>") == [] and parser.finish() == []


def test_end_tag_cut_short_is_not_content() -> None:
    text = '<tool_call>{"name": "f", "arguments": {}}\n</tool_c'
    for pieces in splits(text):
        assert parse(FORMATS["hermes"].make_parser, pieces) == ("", [("f", "{}")])


def test_cut_short_call_keeps_what_was_written() -> None:
    content, calls = parse(
        FORMATS["hermes"].make_parser, ['<tool_call>{"name": "f", "arguments": {"a": "x']
    )
    assert content == "" and calls == [("f", '{"a": "x')]


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        (
            '{"name": "get_weather", "parameters": {"city": "Paris"}}',
            "",
            [("get_weather", {"city": "Paris"})],
        ),
        ('<|python_tag|>{"name": "f", "arguments": {}}', "", [("f", {})]),
        (
            '{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {"y": 2}}',
            "",
            [("a", {"x": 1}), ("b", {"y": 2})],
        ),
        ('{"name": "Bob", "age": 42}', None, []),  # JSON content, not a call
        ("The answer is {x}.", None, []),
        (
            '  Plain text, then <|python_tag|>{"name": "f", "parameters": {"q": "?"}}',
            "  Plain text, then",
            [("f", {"q": "?"})],
        ),
    ],
)
def test_llama3(text: str, content: str | None, calls: list) -> None:
    check("llama3", text, text if content is None else content, calls)


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        ('[TOOL_CALLS][{"name": "f", "arguments": {"a": 1}}]', "", [("f", {"a": 1})]),
        (
            'Sure. [TOOL_CALLS] [{"name": "f", "arguments": {"a": 1}}, '
            '{"name": "g", "arguments": {}}]',
            "Sure.",
            [("f", {"a": 1}), ("g", {})],
        ),
        (
            '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]now[ARGS]{}',
            "",
            [("get_weather", {"city": "Paris"}), ("now", {})],
        ),
        ("[TOOL_CALLS is not the tag", None, []),
    ],
)
def test_mistral(text: str, content: str | None, calls: list) -> None:
    check("mistral", text, text if content is None else content, calls)


def test_format_detection_from_template() -> None:
    assert tool_format(None, "{{ '[TOOL_CALLS]' + tool_calls|tojson }}").name == "mistral"
    assert tool_format(None, "[TOOL_CALLS]{{ name }}[ARGS]").name == "mistral_args"
    assert tool_format(None, "<tool_call>\n{{ tool_call | tojson }}").name == "hermes"
    assert tool_format(None, "{{ '<|python_tag|>' }}").name == "llama3"
    assert tool_format(None, "{{ '<|im_start|>' }}").name == "hermes"  # names none
    assert tool_format("llama3_json", "<tool_call>").name == "llama3"
    assert tool_format("qwen3_coder_unknown", "[TOOL_CALLS]").name == "mistral"
