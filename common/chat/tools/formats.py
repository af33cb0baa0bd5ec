"""The tool-call formats Serval reads and writes, and how one is chosen for a model.

``model.tool_format`` names a format (TabbyAPI's names are accepted where they mean the same
thing); without it the format is read from the chat template: a template that writes
``[TOOL_CALLS]`` is Mistral's, ``<tool_call>`` Hermes/Qwen's, ``<|python_tag|>`` Llama 3's.
A template that names none (ChatML without tools, like the default model's) gets Hermes:
it is the format most open models were trained on, and its tags make calls easy to tell apart
from text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from loguru import logger

from common.chat.tools import hermes, llama3, mistral
from common.chat.tools.parser import ToolCallParser

Call = tuple[str, Any]  # a function name and its arguments (an object, or JSON text)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return arguments
    return arguments


def _hermes_text(calls: Sequence[Call]) -> str:
    return "\n".join(
        f"{hermes.OPEN}\n{_dumps({'name': name, 'arguments': _arguments(args)})}\n{hermes.CLOSE}"
        for name, args in calls
    )


def _llama3_text(calls: Sequence[Call]) -> str:
    return "\n".join(_dumps({"name": n, "parameters": _arguments(a)}) for n, a in calls)


def _mistral_text(calls: Sequence[Call]) -> str:
    listed = [{"name": name, "arguments": _arguments(args)} for name, args in calls]
    return mistral.TOOL_CALLS + _dumps(listed)


def _mistral_args_text(calls: Sequence[Call]) -> str:
    return "".join(
        f"{mistral.TOOL_CALLS}{name}{mistral.ARGS}{_dumps(_arguments(args))}"
        for name, args in calls
    )


@dataclass(frozen=True)
class ToolFormat:
    """One family's call syntax: its parser, and how calls look as text."""

    name: str
    make_parser: Callable[[], ToolCallParser]
    write_calls: Callable[[Sequence[Call]], str]
    trigger: str | None  # the tag that starts calls; None: a call is a bare JSON object
    arguments_key: str = "arguments"
    repeats_trigger: bool = True  # each call has its own trigger (else one tag, then a list)
    short_ids: bool = False  # its templates accept only 9-character alphanumeric call ids


FORMATS = {
    "hermes": ToolFormat("hermes", hermes.HermesParser, _hermes_text, hermes.OPEN),
    "llama3": ToolFormat(
        "llama3",
        llama3.Llama3Parser,
        _llama3_text,
        None,
        arguments_key="parameters",
        repeats_trigger=False,
    ),
    "mistral": ToolFormat(
        "mistral",
        mistral.MistralParser,
        _mistral_text,
        mistral.TOOL_CALLS,
        repeats_trigger=False,
        short_ids=True,
    ),
    "mistral_args": ToolFormat(
        "mistral_args",
        mistral.MistralParser,
        _mistral_args_text,
        mistral.TOOL_CALLS,
        short_ids=True,
    ),
}
DEFAULT_FORMAT = "hermes"
ALIASES = {
    "qwen": "hermes",
    "qwen2_5": "hermes",
    "qwen3": "hermes",
    "chatml": "hermes",
    "llama": "llama3",
    "llama3_json": "llama3",
    "llama3_1": "llama3",
    "llama3_2": "llama3",
    "mistral_old": "mistral",
    "mistral_v11": "mistral_args",
}


def renders_tools(template_source: str) -> bool:
    """Whether a chat template shows the request's tools to the model itself."""
    return re.search(r"\btools\b", template_source) is not None


def _detect(template_source: str) -> str:
    if mistral.TOOL_CALLS in template_source:
        return "mistral_args" if mistral.ARGS in template_source else "mistral"
    if hermes.OPEN in template_source:
        return "hermes"
    if llama3.PYTHON_TAG in template_source:
        return "llama3"
    return DEFAULT_FORMAT


@lru_cache(maxsize=32)
def tool_format(configured: str | None, template_source: str) -> ToolFormat:
    """The format for a model: ``model.tool_format`` if Serval knows it, else the template's."""
    if configured:
        name = configured.strip().lower()
        name = ALIASES.get(name, name)
        if name == "mistral" and mistral.ARGS in template_source:
            name = "mistral_args"
        if name in FORMATS:
            return FORMATS[name]
        logger.warning(
            f"model.tool_format {configured!r} is not one Serval parses "
            f"({', '.join(sorted(FORMATS))}); using the template's format instead"
        )
    return FORMATS[_detect(template_source)]
