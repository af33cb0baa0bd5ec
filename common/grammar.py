"""Structured output: JSON schemas, regexes and grammars turned into llguidance grammars.

Every engine constrains generation with llguidance; this module builds and validates the
grammar once per request, before any job starts, so a bad schema is a 400 and not a failed job.

Nothing reaches llguidance before it passes :class:`GrammarBounds` (size, rule count, nesting
depth: the ``limits.grammar_*`` settings), and llguidance itself only ever runs on the
big-stack grammar threads of ``backends/grammar_threads.py``, within ``limits.grammar_timeout``.
Callers on the event loop use :func:`compile_grammar`; the blocking functions here move their
llguidance work onto a grammar thread when they are called from anywhere else.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import llguidance
from llguidance.gbnf_to_lark import any_to_lark

from backends import grammar_threads
from backends.base import GrammarSpec
from common.config import LimitsConfig
from common.errors import GrammarError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

T = TypeVar("T")

JSON_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False, "lenient": True}

# A rule definition at the start of a line: ``name:``, ``?name:``, ``NAME.2:``, ``name[lazy]:``.
_LARK_RULE = re.compile(r"^[ \t]*[?!]?[A-Za-z_][\w.]*(?:\[[^\]\n]*\])?[ \t]*:(?!:)", re.MULTILINE)


@dataclass(frozen=True)
class GrammarBounds:
    """What a request's grammar may be, checked before llguidance sees it."""

    max_chars: int
    max_rules: int
    max_depth: int
    timeout: float

    @classmethod
    def from_limits(cls, limits: LimitsConfig) -> GrammarBounds:
        return cls(
            max_chars=limits.grammar_max_chars,
            max_rules=limits.grammar_max_rules,
            max_depth=limits.grammar_max_depth,
            timeout=limits.grammar_timeout,
        )


DEFAULT_BOUNDS = GrammarBounds.from_limits(LimitsConfig())


async def compile_grammar(work: Callable[..., T], *args: Any, bounds: GrammarBounds) -> T:
    """``work(*args)`` (anything that builds grammars) on a grammar thread, within the
    bounds' timeout: a grammar that takes longer is a 400."""
    return await grammar_threads.run(work, *args, timeout=bounds.timeout)


def _on_grammar_thread(work: Callable[..., T], *args: Any, timeout: float) -> T:
    """``work(*args)`` on a grammar thread, from wherever the caller is (blocking)."""
    if threading.current_thread() in grammar_threads.pool().threads:
        return work(*args)
    future = grammar_threads.pool().submit(work, *args)
    try:
        return future.result(timeout)
    except TimeoutError:
        future.cancel()
        raise GrammarError(
            f"The grammar took longer than {timeout:g} s to compile (limits.grammar_timeout).",
            code="grammar_timeout",
        ) from None


def _too_big(what: str, size: int, limit: int, unit: str, setting: str) -> GrammarError:
    return GrammarError(
        f"The {what} has {size:,} {unit}; the limit is {limit:,} (limits.{setting}).",
        code="grammar_too_large",
    )


def check_text(text: str, what: str, bounds: GrammarBounds, rules: int = 0) -> None:
    """Refuse grammar text longer than ``max_chars`` or with more than ``max_rules`` rules."""
    if len(text) > bounds.max_chars:
        raise _too_big(what, len(text), bounds.max_chars, "characters", "grammar_max_chars")
    if rules > bounds.max_rules:
        raise _too_big(what, rules, bounds.max_rules, "rules", "grammar_max_rules")


def lark_rules(text: str) -> int:
    """Rules in a Lark grammar: its definitions, and one per JSON object of ``%json`` schemas
    inside it (each ``{`` counts, so the count never falls short)."""
    return len(_LARK_RULE.findall(text)) + text.count("{")


def check_schema(schema: Any, bounds: GrammarBounds, what: str = "JSON schema") -> str:
    """Refuse a schema nested deeper than ``max_depth`` or with more than ``max_rules``
    subschemas (objects and arrays); the schema as JSON text, checked for size."""
    nodes = 0
    pending: list[tuple[Any, int]] = [(schema, 1)]
    while pending:  # no recursion: a hostile schema may be nested thousands deep
        value, depth = pending.pop()
        if not isinstance(value, dict | list):
            continue
        nodes += 1
        if depth > bounds.max_depth:
            raise _too_big(what, depth, bounds.max_depth, "levels", "grammar_max_depth")
        if nodes > bounds.max_rules:
            raise _too_big(what, nodes, bounds.max_rules, "subschemas", "grammar_max_rules")
        children = value.values() if isinstance(value, dict) else value
        pending.extend((child, depth + 1) for child in children)
    text = json.dumps(schema)
    check_text(text, what, bounds)
    return text


def _regex_depth(pattern: str) -> int:
    depth = deepest = 0
    escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def _validate(grammar: str, description: str) -> None:
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        grammar, None, limits=grammar_threads.parser_limits()
    )
    if is_error:
        raise GrammarError(f"Invalid {description}: {messages[0] if messages else 'unknown error'}")


def _validated(grammar: str, description: str, bounds: GrammarBounds) -> GrammarSpec:
    _on_grammar_thread(_validate, grammar, description, timeout=bounds.timeout)
    return GrammarSpec(grammar=grammar, description=description, build_timeout=bounds.timeout)


def _json_grammar(text: str) -> str:
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(text, overrides=JSON_OPTIONS)
    except (ValueError, TypeError) as exc:
        raise GrammarError(f"Invalid JSON schema: {exc}", param="json_schema") from None


def from_json_schema(
    schema: dict[str, Any] | bool, bounds: GrammarBounds = DEFAULT_BOUNDS
) -> GrammarSpec:
    text = check_schema(schema, bounds)
    grammar = _on_grammar_thread(_json_grammar, text, timeout=bounds.timeout)
    return _validated(grammar, "JSON schema", bounds)


def from_regex(pattern: str, bounds: GrammarBounds = DEFAULT_BOUNDS) -> GrammarSpec:
    check_text(pattern, "regex", bounds)
    depth = _regex_depth(pattern)
    if depth > bounds.max_depth:
        raise _too_big("regex", depth, bounds.max_depth, "levels of groups", "grammar_max_depth")
    return _validated(llguidance.LLMatcher.grammar_from_regex(pattern), "regex", bounds)


def _gbnf_to_lark(text: str) -> str:
    try:
        return any_to_lark(text)
    except Exception as exc:
        raise GrammarError(f"Invalid GBNF grammar: {exc}", param="grammar_string") from None


def from_grammar_text(text: str, bounds: GrammarBounds = DEFAULT_BOUNDS) -> GrammarSpec:
    """A Lark grammar, or llama.cpp GBNF when it contains ``::=``."""
    if "::=" in text:
        check_text(text, "GBNF grammar", bounds, rules=text.count("::="))
        lark = _on_grammar_thread(_gbnf_to_lark, text, timeout=bounds.timeout)
        check_text(lark, "GBNF grammar", bounds, rules=lark_rules(lark))
        return _validated(llguidance.LLMatcher.grammar_from_lark(lark), "GBNF grammar", bounds)
    check_text(text, "Lark grammar", bounds, rules=lark_rules(text))
    return _validated(llguidance.LLMatcher.grammar_from_lark(text), "Lark grammar", bounds)


def from_tool_grammar(lark: str, bounds: GrammarBounds = DEFAULT_BOUNDS) -> GrammarSpec:
    """A grammar Serval wrote around the request's function schemas (each checked already)."""
    check_text(lark, "tool-call grammar", bounds, rules=lark_rules(lark))
    return _validated(llguidance.LLMatcher.grammar_from_lark(lark), "tool-call grammar", bounds)


def build_grammar(
    json_schema: dict[str, Any] | None = None,
    regex_pattern: str | None = None,
    grammar_string: str | None = None,
    bounds: GrammarBounds = DEFAULT_BOUNDS,
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
        return from_json_schema(json_schema, bounds)
    if regex_pattern:
        return from_regex(regex_pattern, bounds)
    if grammar_string:
        return from_grammar_text(grammar_string, bounds)
    return None
