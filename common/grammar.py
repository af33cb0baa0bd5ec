"""Structured output: JSON schemas, regexes and grammars turned into llguidance grammars.

Every engine constrains generation with llguidance; this module builds and validates the
grammar once per request, before any job starts, so a bad schema is a 400 and not a failed job.
"""

from __future__ import annotations

import json
from typing import Any

import llguidance
from llguidance.gbnf_to_lark import any_to_lark

from backends.base import GrammarSpec
from common.errors import GrammarError

# Bounds that keep a hostile schema or grammar from exploding (llguidance's defaults, tightened).
LIMITS = dict(
    max_items_in_row=2000,
    initial_lexer_fuel=1_000_000,
    step_lexer_fuel=200_000,
    step_max_items=50_000,
    max_lexer_states=50_000,
    max_grammar_size=200_000,
    verbose_errors=False,
)
JSON_OPTIONS = {"whitespace_flexible": False, "lenient": True}


def parser_limits() -> llguidance.LLParserLimits:
    return llguidance.LLParserLimits(**LIMITS)


def _validated(grammar: str, description: str) -> GrammarSpec:
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        grammar, None, limits=parser_limits()
    )
    if is_error:
        raise GrammarError(f"Invalid {description}: {messages[0] if messages else 'unknown error'}")
    return GrammarSpec(grammar=grammar, description=description)


def from_json_schema(schema: dict[str, Any] | bool) -> GrammarSpec:
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), overrides=JSON_OPTIONS
        )
    except (ValueError, TypeError) as exc:
        raise GrammarError(f"Invalid JSON schema: {exc}", param="json_schema") from None
    return _validated(grammar, "JSON schema")


def from_regex(pattern: str) -> GrammarSpec:
    return _validated(llguidance.LLMatcher.grammar_from_regex(pattern), "regex")


def from_grammar_text(text: str) -> GrammarSpec:
    """A Lark grammar, or llama.cpp GBNF when it contains ``::=``."""
    if "::=" in text:
        try:
            text = any_to_lark(text)
        except Exception as exc:
            raise GrammarError(f"Invalid GBNF grammar: {exc}", param="grammar_string") from None
        return _validated(llguidance.LLMatcher.grammar_from_lark(text), "GBNF grammar")
    return _validated(llguidance.LLMatcher.grammar_from_lark(text), "Lark grammar")


def from_tool_grammar(lark: str) -> GrammarSpec:
    return _validated(llguidance.LLMatcher.grammar_from_lark(lark), "tool-call grammar")


def build_grammar(
    json_schema: dict[str, Any] | None = None,
    regex_pattern: str | None = None,
    grammar_string: str | None = None,
) -> GrammarSpec | None:
    """The one constraint a request asks for (at most one may be set), or None.

    An empty schema ``{}`` means no constraint (SillyTavern sends it by default).
    """
    chosen = [
        name
        for name, value in (
            ("json_schema", json_schema),
            ("regex_pattern", regex_pattern),
            ("grammar_string", grammar_string),
        )
        if value
    ]
    if len(chosen) > 1:
        raise GrammarError(f"Only one constraint may be set, got {', '.join(chosen)}.")
    if json_schema:
        return from_json_schema(json_schema)
    if regex_pattern:
        return from_regex(regex_pattern)
    if grammar_string:
        return from_grammar_text(grammar_string)
    return None
