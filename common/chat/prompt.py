"""From chat messages to a prompt: template variables, rendering, and continuing a message."""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass, field
from typing import Any

from backends.base import SpecialTokens
from common.chat.templates import ChatTemplate, run_render
from common.chat.tools.formats import DEFAULT_FORMAT, FORMATS, ToolFormat, renders_tools
from common.chat.tools.prompt import plain_tool_messages, shorten_call_ids
from common.config import LimitsConfig
from common.errors import BadRequestError, TemplateError

# Marks the end of the final message, so the prompt can be cut there to continue it.
_CONTINUE_MARK = "\u2063<serval-continue>\u2063"


@dataclass
class ChatPrompt:
    """What a chat request asks the template for."""

    messages: list[dict[str, Any]]
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    response_prefix: str | None = None
    tools: list[dict[str, Any]] | None = None
    functions: list[dict[str, Any]] | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    tool_format: ToolFormat = FORMATS[DEFAULT_FORMAT]  # for templates without tool support


def tool_arguments_as_objects(messages: list[dict[str, Any]]) -> None:
    """Templates iterate over tool-call arguments, so JSON strings become objects in place."""
    for message in messages:
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                with contextlib.suppress(json.JSONDecodeError):
                    function["arguments"] = json.loads(arguments) if arguments.strip() else {}


def order_tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool results after an assistant's calls, in the order of those calls."""
    ordered: list[dict[str, Any]] = []
    index = 0
    while index < len(messages):
        message = messages[index]
        ordered.append(message)
        index += 1
        call_ids = [c.get("id") for c in message.get("tool_calls") or []]
        if message.get("role") != "assistant" or not call_ids:
            continue
        results = []
        while index < len(messages) and messages[index].get("role") == "tool":
            results.append(messages[index])
            index += 1
        position = {call_id: i for i, call_id in enumerate(call_ids)}
        results.sort(key=lambda m: position.get(m.get("tool_call_id"), len(position)))
        ordered += results
    return ordered


def _for_template(
    template: ChatTemplate, chat: ChatPrompt, messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Messages as the template can take them: tools and calls written out as text for a
    template that does not know tools, 9-character call ids for Mistral's templates."""
    if renders_tools(template.source):
        if chat.tool_format.short_ids:
            shorten_call_ids(messages)
        return messages
    tools = chat.tools or [{"type": "function", "function": f} for f in chat.functions or []]
    has_history = any(
        m.get("tool_calls") or m.get("role") in ("tool", "function") for m in messages
    )
    if not tools and not has_history:
        return messages
    return plain_tool_messages(messages, chat.tool_format, tools)


def _variables(
    chat: ChatPrompt, special: SpecialTokens, messages: list[dict[str, Any]]
) -> dict[str, Any]:
    variables = dict(chat.variables)
    variables.update(
        messages=messages,
        add_generation_prompt=chat.add_generation_prompt,
        bos_token=special.bos_token or "",
        eos_token=special.eos_token or "",
        pad_token=special.pad_token or "",
        unk_token=special.unk_token or "",
    )
    if chat.tools:
        variables["tools"] = chat.tools
    if chat.functions:
        variables["functions"] = chat.functions
    return variables


def _render(
    template: ChatTemplate, chat: ChatPrompt, special: SpecialTokens, timeout: float
) -> str:
    messages = order_tool_results(copy.deepcopy(chat.messages))
    tool_arguments_as_objects(messages)
    messages = _for_template(template, chat, messages)
    if not chat.continue_final_message:
        prompt = template.render(_variables(chat, special, messages), timeout)
    else:
        if chat.add_generation_prompt:
            raise BadRequestError(
                "continue_final_message needs add_generation_prompt set to false.",
                param="continue_final_message",
            )
        last = messages[-1]
        if not isinstance(last.get("content"), str):
            raise BadRequestError("The final message has no text to continue.", param="messages")
        messages[-1] = {**last, "content": last["content"] + _CONTINUE_MARK}
        rendered = template.render(_variables(chat, special, messages), timeout)
        cut = rendered.rfind(_CONTINUE_MARK)
        if cut < 0:
            raise TemplateError(
                "The template dropped the final message, so it cannot be continued."
            )
        prompt = rendered[:cut]
    if chat.response_prefix:
        prompt += chat.response_prefix
    return prompt


def check_message_count(count: int, limits: LimitsConfig, param: str = "messages") -> None:
    """Refuse more chat messages than ``limits.max_messages`` (each is copied and rendered)."""
    if count > limits.max_messages:
        raise BadRequestError(
            f"At most {limits.max_messages} messages per request (limits.max_messages).",
            param=param,
        )


async def render_prompt(
    template: ChatTemplate, chat: ChatPrompt, special: SpecialTokens, timeout: float
) -> str:
    """The prompt text for ``chat``, rendered off the event loop within ``timeout`` seconds."""
    return await run_render(_render, template, chat, special, timeout, timeout=timeout)


def add_bos_for(prompt: str, special: SpecialTokens) -> bool:
    """Whether to add BOS to a rendered prompt: not when the template already wrote it."""
    if not special.add_bos_default:
        return False
    return not (special.bos_token and prompt.startswith(special.bos_token))
