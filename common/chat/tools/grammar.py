"""Grammars for chat output: an optional reasoning block, then tool calls in the model's format.

With ``tool_choice`` ``required`` or a named function the answer must be calls: the grammar
holds the format's syntax with each function's parameters as an inline JSON schema
(``%json``), so the arguments always parse and validate. With ``auto`` and ``strict``
functions the model may write text, and a call is held to its schema once its tag is written.
A model that reasons first gets its reasoning block in front of either (free text up to the
end tag), so constraints apply to the answer and not to the thinking.

Tags that are single special tokens (``[TOOL_CALLS]`` in Mistral's tokenizer) are written as
token ids (``<[id]>``), since a special token is never produced by text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backends.base import GrammarSpec, ModelView
from common.chat.tools.choice import FunctionSpec, ToolChoice
from common.chat.tools.formats import ToolFormat
from common.chat.tools.hermes import CLOSE as HERMES_CLOSE
from common.chat.tools.llama3 import PYTHON_TAG
from common.chat.tools.mistral import ARGS as MISTRAL_ARGS
from common.grammar import (
    DEFAULT_BOUNDS,
    JSON_OPTIONS,
    GrammarBounds,
    check_schema,
    from_tool_grammar,
)

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

SpecialId = Callable[[str], int | None]
JSON_CALL_OPTIONS: JsonCompileOptions = {
    **JSON_OPTIONS,
    "item_separator": ", ",
    "key_separator": ": ",
}
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def special_token_id(model: ModelView, text: str) -> int | None:
    """The id of ``text`` when it is one special token of ``model``'s tokenizer, else None."""
    ids = model.encode(text, add_bos=False, encode_special=True)
    if len(ids) == 1 and not model.decode(ids, decode_special=False):
        return ids[0]
    return None


@dataclass(frozen=True)
class ReasoningSyntax:
    """A reasoning block in front of the answer; ``opened``: the prompt already opened it."""

    start: str
    end: str
    opened: bool


class _Lark:
    """Collects the rules of one grammar."""

    def __init__(self, special_id: SpecialId) -> None:
        self._special_id = special_id
        self._rules: list[str] = [
            "TEXT: /(?s:.*)/",
            "SPACE: /[ \\t\\r\\n]{0,4}/",
        ]

    def add(self, rule: str) -> None:
        self._rules.append(rule)

    def special(self, text: str) -> int | None:
        return self._special_id(text)

    def tag(self, text: str) -> str:
        token = self._special_id(text)
        return f"<[{token}]>" if token is not None else _literal(text)

    def source(self, start: str) -> str:
        return "\n".join([f"start: {start}", *self._rules])


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _call_object(name: str, key: str, parameters: dict[str, Any]) -> str:
    """``{"name": name, key: arguments}``; definitions the arguments refer to (``$defs``, as
    pydantic writes them) move to the root, where ``#/$defs/...`` points."""
    arguments = dict(parameters)
    definitions: dict[str, Any] = {
        k: arguments.pop(k) for k in ("$defs", "definitions") if k in arguments
    }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"name": {"const": name}, key: arguments},
        "required": ["name", key],
        "additionalProperties": False,
        **definitions,
    }
    return _json(schema, JSON_CALL_OPTIONS)


def _json(schema: dict[str, Any], options: JsonCompileOptions) -> str:
    return "%json " + json.dumps({**schema, "x-guidance": options}, ensure_ascii=False)


def _reasoning(lark: _Lark, syntax: ReasoningSyntax) -> str:
    """Rules for the reasoning block; returns what goes in front of the answer."""
    end = lark.special(syntax.end)
    if end is not None:
        lark.add(f"think: TEXT <[{end}]>")
    else:
        lark.add(f"think[suffix={_literal(syntax.end)}]: TEXT")
    if syntax.opened:
        return "think SPACE "
    return f"({lark.tag(syntax.start)} think SPACE)? "


@dataclass(frozen=True)
class _CallSet:
    """The calls a grammar allows: the functions, in the model's format; with ``strict_only``
    only strict functions are held to their parameters; ``parallel``: more than one call."""

    fmt: ToolFormat
    functions: Sequence[FunctionSpec]
    strict_only: bool
    parallel: bool

    def schema(self, function: FunctionSpec) -> dict[str, Any]:
        """The schema ``function``'s arguments are held to."""
        if self.strict_only and not function.strict:
            return ANY_OBJECT
        return function.parameters or ANY_OBJECT


def _one_call(lark: _Lark, calls: _CallSet) -> str:
    """What follows the trigger tag: one call (for Mistral's list, one or more)."""
    fmt = calls.fmt
    if fmt.name == "mistral_args":
        lark.add(
            "named_call: "
            + " | ".join(
                f"{_literal(f.name)} {lark.tag(MISTRAL_ARGS)} "
                f"{_json(calls.schema(f), JSON_CALL_OPTIONS)}"
                for f in calls.functions
            )
        )
        return "named_call"
    objects = [_call_object(f.name, fmt.arguments_key, calls.schema(f)) for f in calls.functions]
    lark.add("call: " + " | ".join(objects))
    if fmt.name == "hermes":
        lark.add(f'hermes_call: "\\n" call "\\n" {lark.tag(HERMES_CLOSE)}')
        return "hermes_call"
    if fmt.name == "mistral":
        return '"[" call (", " call)* "]"' if calls.parallel else '"[" call "]"'
    return "call"


def _calls(lark: _Lark, calls: _CallSet) -> str:
    """Calls and nothing else: one, or with ``parallel`` one or more."""
    call, fmt = _one_call(lark, calls), calls.fmt
    if fmt.trigger is None:
        return call
    trigger = lark.tag(fmt.trigger)
    if calls.parallel and fmt.repeats_trigger:
        if fmt.name == "hermes":  # a new line may end the answer as well as start a call
            return f'{trigger} {call} ("\\n" {trigger} {call})* "\\n"?'
        return f"{trigger} {call} ({trigger} {call})*"
    return f"{trigger} {call}"


def _regex_literal(text: str) -> str:
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$/" else c for c in text)


def _text_or_calls(lark: _Lark, fmt: ToolFormat, choice: ToolChoice) -> str:
    """Any text, and calls held to their grammar once their tag is written."""
    call = _one_call(lark, _CallSet(fmt, choice.functions, True, choice.parallel))
    if fmt.trigger is None:  # bare JSON calls: an answer that starts with "{" is a call
        python_tag = lark.tag(PYTHON_TAG)
        exclude = "\\s*\\{(?s:.*)"
        if python_tag.startswith('"'):
            exclude += "|\\s*" + _regex_literal(PYTHON_TAG) + "(?s:.*)"
        lark.add(f"PLAIN: /(?s:.*)/ & ~/{exclude}/")
        return f"(PLAIN | {python_tag}? {call})"
    trigger = lark.tag(fmt.trigger)
    lazy = "[lazy]" if trigger.startswith('"') else ""
    lark.add(f"before_call{lazy}: TEXT {trigger}")
    if choice.parallel and fmt.repeats_trigger:
        return f"(before_call {call})* TEXT"
    return f"(TEXT | before_call {call})"


def tool_call_grammar(
    fmt: ToolFormat,
    choice: ToolChoice,
    special_id: SpecialId,
    reasoning: ReasoningSyntax | None = None,
    answer_schema: dict[str, Any] | None = None,
    bounds: GrammarBounds = DEFAULT_BOUNDS,
) -> GrammarSpec:
    """The grammar for a request whose ``choice`` is :attr:`ToolChoice.constrained`.

    With ``answer_schema`` (a ``response_format``) and ``auto``, the answer is either calls
    or JSON that follows that schema.
    """
    for function in choice.functions:
        check_schema(function.parameters or ANY_OBJECT, bounds, f"schema of {function.name!r}")
    if answer_schema:
        check_schema(answer_schema, bounds)
    lark = _Lark(special_id)
    prefix = _reasoning(lark, reasoning) if reasoning else ""
    if choice.forced:
        parallel = choice.parallel and choice.mode == "required"
        body = _calls(lark, _CallSet(fmt, choice.callable_functions(), False, parallel))
    elif answer_schema:
        calls = _calls(lark, _CallSet(fmt, choice.functions, True, choice.parallel))
        body = f"({_json(answer_schema, JSON_OPTIONS)} | {calls})"
    else:
        body = _text_or_calls(lark, fmt, choice)
    return from_tool_grammar(lark.source(prefix + body), bounds)


def answer_grammar(
    json_schema: dict[str, Any],
    special_id: SpecialId,
    reasoning: ReasoningSyntax,
    bounds: GrammarBounds = DEFAULT_BOUNDS,
) -> GrammarSpec:
    """A JSON answer after the reasoning block, so the schema does not bind the thinking."""
    check_schema(json_schema, bounds)
    lark = _Lark(special_id)
    prefix = _reasoning(lark, reasoning)
    return from_tool_grammar(lark.source(prefix + _json(json_schema, JSON_OPTIONS)), bounds)
