"""An Anthropic Messages body as the chat request every chat API plans through.

``system`` becomes a system message, text blocks become text parts, ``tool_use`` blocks the
assistant's ``tool_calls``, ``tool_result`` blocks ``tool`` messages, ``thinking`` blocks the
assistant's reasoning; tools, ``tool_choice``, ``stop_sequences`` and ``thinking`` map to their
chat fields, and the sampler fields pass through unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from common.errors import BadRequestError, UnsupportedError
from common.sampling import SamplerRequest
from endpoints.Anthropic.types import (
    CountTokensRequest,
    DocumentBlockParam,
    ImageBlockParam,
    MessageParam,
    MessagesRequest,
    RedactedThinkingBlockParam,
    TextBlockParam,
    ThinkingBlockParam,
    ToolChoiceParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
)
from endpoints.OAI.types.chat import ChatCompletionRequest

_NO_TOOL_IMAGES = "Images in tool results are not supported; send them in a user turn."
_NO_DOCUMENTS = "The loaded model does not take documents; send their text as a text block."


def _text(blocks: list[TextBlockParam | ImageBlockParam]) -> str:
    for block in blocks:
        if isinstance(block, ImageBlockParam):
            raise UnsupportedError(_NO_TOOL_IMAGES, param="messages")
    return "".join(block.text for block in blocks if isinstance(block, TextBlockParam))


def _parts(texts: list[str]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text} for text in texts]


def _image_part(block: ImageBlockParam) -> dict[str, Any]:
    """An image block as a chat ``image_url`` part: a base64 source as a data URI, a url
    source as its URL (both checked and read later, as every API's images are)."""
    source = block.source
    kind = source.get("type")
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise BadRequestError(
                "A base64 image source needs media_type and data strings.", param="messages"
            )
        url = f"data:{media};base64,{data}"
    elif kind == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise BadRequestError(
            "An image block's source must be of type base64 (media_type, data) or url (url).",
            param="messages",
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_message(block: ToolResultBlockParam) -> dict[str, Any]:
    content = block.content if isinstance(block.content, str) else _text(block.content)
    if block.is_error:
        content = f"Error: {content}"
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": content}


def _user_messages(message: MessageParam) -> list[dict[str, Any]]:
    """A user turn: its tool results as ``tool`` messages, its text and images as user
    messages, in order."""
    if isinstance(message.content, str):
        return [{"role": "user", "content": message.content}]
    messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, TextBlockParam):
            parts.append({"type": "text", "text": block.text})
            continue
        if isinstance(block, ImageBlockParam):
            parts.append(_image_part(block))
            continue
        if isinstance(block, DocumentBlockParam):
            raise UnsupportedError(_NO_DOCUMENTS, param="messages")
        if not isinstance(block, ToolResultBlockParam):
            raise BadRequestError(
                f"A user message cannot hold a {block.type} block.", param="messages"
            )
        if parts:
            messages.append({"role": "user", "content": parts})
            parts = []
        messages.append(_tool_message(block))
    if parts:
        messages.append({"role": "user", "content": parts})
    return messages


def _assistant_message(message: MessageParam) -> dict[str, Any]:
    if isinstance(message.content, str):
        return {"role": "assistant", "content": message.content}
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, TextBlockParam):
            texts.append(block.text)
        elif isinstance(block, ThinkingBlockParam):
            reasoning.append(block.thinking)
        elif isinstance(block, ToolUseBlockParam):
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append({"id": block.id, "function": {"name": block.name, "arguments": arguments}})
        elif not isinstance(block, RedactedThinkingBlockParam):  # encrypted: nothing to show
            raise BadRequestError(
                f"An assistant message cannot hold a {block.type} block.", param="messages"
            )
    result: dict[str, Any] = {"role": "assistant", "content": _parts(texts) if texts else None}
    if reasoning:
        result["reasoning_content"] = "".join(reasoning)
    if calls:
        result["tool_calls"] = calls
    return result


def _system_message(message: MessageParam) -> dict[str, Any]:
    """A ``system`` turn between the others: its text, as a system message in its place."""
    if isinstance(message.content, str):
        return {"role": "system", "content": message.content}
    texts: list[str] = []
    for block in message.content:
        if not isinstance(block, TextBlockParam):
            raise BadRequestError(
                f"A system message cannot hold a {block.type} block.", param="messages"
            )
        texts.append(block.text)
    return {"role": "system", "content": _parts(texts)}


def _messages(body: CountTokensRequest | MessagesRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.system:
        system = body.system
        content = system if isinstance(system, str) else _parts([block.text for block in system])
        messages.append({"role": "system", "content": content})
    for message in body.messages:
        if message.role == "user":
            messages += _user_messages(message)
        elif message.role == "system":
            messages.append(_system_message(message))
        else:
            messages.append(_assistant_message(message))
    return messages


def _tool_choice(choice: ToolChoiceParam | None) -> Any:
    if choice is None:
        return None
    if choice.type == "tool":
        if not choice.name:
            raise BadRequestError("tool_choice of type 'tool' needs a name.", param="tool_choice")
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def _prompt_fields(body: CountTokensRequest | MessagesRequest) -> dict[str, Any]:
    data: dict[str, Any] = {"model": body.model, "messages": _messages(body)}
    if body.tools:
        data["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.input_schema,
                },
            }
            for tool in body.tools
        ]
    choice = body.tool_choice
    if choice is not None:
        data["tool_choice"] = _tool_choice(choice)
        data["parallel_tool_calls"] = not choice.disable_parallel_tool_use
    if body.thinking is not None:
        data["enable_thinking"] = body.thinking.type != "disabled"
        if body.thinking.type == "enabled" and body.thinking.budget_tokens is not None:
            data["reasoning_budget_tokens"] = body.thinking.budget_tokens
    return data


def _chat_request(data: dict[str, Any]) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:  # what Anthropic's fields allow but a chat request does not
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BadRequestError(f"{where}: {first['msg']}", param=where or None) from None


def chat_request(body: MessagesRequest) -> ChatCompletionRequest:
    """The chat request that ``body`` asks for."""
    data = body.model_dump(include=set(SamplerRequest.model_fields), exclude_unset=True)
    data.update(_prompt_fields(body))
    data["stop"] = body.stop_sequences
    data["stream"] = body.stream
    config = body.output_config
    if config is not None and config.effort is not None:
        data["reasoning_effort"] = "high" if config.effort in ("xhigh", "max") else config.effort
    if config is not None and config.format is not None:
        schema = {"name": "output", "schema": config.format.schema_}
        data["response_format"] = {"type": "json_schema", "json_schema": schema}
    chat = _chat_request(data)
    chat.naming_not_applied(body)
    return chat


def counted_chat(body: CountTokensRequest) -> ChatCompletionRequest:
    """The chat request whose prompt ``count_tokens`` measures."""
    return _chat_request(_prompt_fields(body))
