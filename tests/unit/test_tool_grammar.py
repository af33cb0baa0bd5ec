"""Tool-call grammars: what they let a model write, checked token by token with llguidance."""

from __future__ import annotations

from pathlib import Path

import llguidance
import llguidance.hf
import pytest

from common.chat.tools.choice import FunctionSpec, ToolChoice, tool_choice
from common.chat.tools.formats import FORMATS
from common.chat.tools.grammar import ReasoningSyntax, answer_grammar, tool_call_grammar
from common.errors import GrammarError
from tests.support.tiny_model import build_tokenizer

LEVEL = FunctionSpec(
    "set_level",
    {
        "type": "object",
        "properties": {"level": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["level"],
        "additionalProperties": False,
    },
)
NOW = FunctionSpec("now", {}, strict=False)
STRICT_LEVEL = FunctionSpec(LEVEL.name, LEVEL.parameters, strict=True)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from transformers import PreTrainedTokenizerFast

    folder: Path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(folder)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), eos_token="</s>")
    return hf, llguidance.hf.from_tokenizer(hf, n_vocab=hf.vocab_size)


def accepts(tokenizer, grammar, text: str) -> bool:
    """Whether the grammar lets a model write exactly ``text`` and then stop."""
    hf, ll = tokenizer
    matcher = llguidance.LLMatcher(ll, grammar.grammar)
    assert not matcher.is_error(), matcher.get_error()
    ids = hf.encode(text, add_special_tokens=False)
    return (
        matcher.validate_tokens(ids) == len(ids)
        and matcher.consume_tokens(ids)
        and (matcher.is_accepting())
    )


def no_special(_: str) -> None:
    return None


HERMES_LEVEL = '<tool_call>\n{"name": "set_level", "arguments": {"level": 3}}\n</tool_call>'


def test_required_hermes(tokenizer) -> None:
    choice = tool_choice([LEVEL, NOW], "required", parallel=False)
    grammar = tool_call_grammar(FORMATS["hermes"], choice, no_special)
    assert accepts(tokenizer, grammar, HERMES_LEVEL)
    assert accepts(
        tokenizer, grammar, '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
    )
    assert not accepts(tokenizer, grammar, HERMES_LEVEL.replace("3", "7"))  # out of range
    assert not accepts(tokenizer, grammar, HERMES_LEVEL.replace("set_level", "reboot"))
    assert not accepts(tokenizer, grammar, "I would rather not.")
    assert not accepts(tokenizer, grammar, HERMES_LEVEL + "\n" + HERMES_LEVEL)  # one call only


def test_required_parallel_hermes(tokenizer) -> None:
    grammar = tool_call_grammar(FORMATS["hermes"], tool_choice([LEVEL], "required"), no_special)
    assert accepts(tokenizer, grammar, HERMES_LEVEL + "\n" + HERMES_LEVEL.replace("3", "1"))


def test_named_function_only(tokenizer) -> None:
    choice = tool_choice([LEVEL, NOW], "function", "now")
    grammar = tool_call_grammar(FORMATS["hermes"], choice, no_special)
    assert accepts(
        tokenizer, grammar, '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
    )
    assert not accepts(tokenizer, grammar, HERMES_LEVEL)


@pytest.mark.parametrize(
    ("fmt", "call"),
    [
        ("llama3", '{"name": "set_level", "parameters": {"level": 2}}'),
        ("mistral", '[TOOL_CALLS][{"name": "set_level", "arguments": {"level": 2}}]'),
        ("mistral_args", '[TOOL_CALLS]set_level[ARGS]{"level": 2}'),
    ],
)
def test_other_formats(tokenizer, fmt: str, call: str) -> None:
    grammar = tool_call_grammar(FORMATS[fmt], tool_choice([LEVEL], "required"), no_special)
    assert accepts(tokenizer, grammar, call)
    assert not accepts(tokenizer, grammar, call.replace("2", "9"))


def test_auto_with_strict_functions_allows_text_and_holds_calls(tokenizer) -> None:
    choice = ToolChoice((STRICT_LEVEL, NOW), "auto")
    grammar = tool_call_grammar(FORMATS["hermes"], choice, no_special)
    assert accepts(tokenizer, grammar, "No call is needed.")
    assert accepts(tokenizer, grammar, "Sure.\n" + HERMES_LEVEL)
    assert not accepts(tokenizer, grammar, "Sure.\n" + HERMES_LEVEL.replace("3", "8"))
    llama = tool_call_grammar(FORMATS["llama3"], choice, no_special)
    assert accepts(tokenizer, llama, "Plain words.")
    assert not accepts(tokenizer, llama, '{"name": "set_level", "parameters": {"level": 0}}')


def test_auto_with_a_response_format_is_calls_or_that_json(tokenizer) -> None:
    answer = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    grammar = tool_call_grammar(
        FORMATS["hermes"], ToolChoice((STRICT_LEVEL,), "auto"), no_special, answer_schema=answer
    )
    assert accepts(tokenizer, grammar, '{"ok":true}')
    assert accepts(tokenizer, grammar, HERMES_LEVEL)
    assert not accepts(tokenizer, grammar, "Free text.")


def test_reasoning_comes_first(tokenizer) -> None:
    opened = ReasoningSyntax("<think>", "</think>", opened=True)
    choice = tool_choice([LEVEL], "required")
    grammar = tool_call_grammar(FORMATS["hermes"], choice, no_special, opened)
    assert accepts(tokenizer, grammar, "Loud means 3, < 4.</think>\n\n" + HERMES_LEVEL)
    assert not accepts(tokenizer, grammar, HERMES_LEVEL)  # the block must close first
    optional = ReasoningSyntax("<think>", "</think>", opened=False)
    grammar = tool_call_grammar(FORMATS["hermes"], choice, no_special, optional)
    assert accepts(tokenizer, grammar, HERMES_LEVEL)
    assert accepts(tokenizer, grammar, "<think>hmm</think>\n" + HERMES_LEVEL)
    json_answer = answer_grammar({"type": "object"}, no_special, opened)
    assert accepts(tokenizer, json_answer, 'It is {}?</think>\n{"a":1}')


def test_invalid_schemas_are_grammar_errors() -> None:
    bad = FunctionSpec(
        "bad", {"type": "object", "properties": {"x": {"type": "string", "pattern": "(("}}}
    )
    with pytest.raises(GrammarError):
        tool_call_grammar(FORMATS["hermes"], tool_choice([bad], "required"), no_special)


def test_pydantic_style_definitions_resolve(tokenizer) -> None:
    nested = FunctionSpec(
        "move",
        {
            "$defs": {
                "Point": {
                    "type": "object",
                    "properties": {"x": {"type": "integer"}},
                    "required": ["x"],
                    "additionalProperties": False,
                }
            },
            "type": "object",
            "properties": {"to": {"$ref": "#/$defs/Point"}},
            "required": ["to"],
            "additionalProperties": False,
        },
    )
    grammar = tool_call_grammar(FORMATS["hermes"], tool_choice([nested], "required"), no_special)
    call = '<tool_call>\n{"name": "move", "arguments": {"to": {"x": 4}}}\n</tool_call>'
    assert accepts(tokenizer, grammar, call)
    assert not accepts(tokenizer, grammar, call.replace("4", '"four"'))
