"""A Responses API body as the chat request it stands for.

``instructions`` becomes a system message before the conversation; ``input`` items become
chat messages (``function_call`` items an assistant message's tool calls, ``function_call_output``
items tool messages, ``reasoning`` items the reasoning of the assistant message after them);
function tools (and those grouped in ``namespace`` tools), ``tool_choice``, ``text.format``,
``reasoning`` and ``max_output_tokens`` map to their chat fields. The chat route's planning then
does the rest, so every sampler, grammar, tool format and limit works the same here.
"""

from __future__ import annotations

from typing import Any

from common.errors import BadRequestError, UnsupportedError
from common.sampling import SamplerRequest
from endpoints.OAI.types.chat import (
    ChatCompletionRequest,
    ChatMessage,
    ContentPart,
    FunctionCall,
    FunctionDefinition,
    ImagePart,
    ImageUrl,
    NamedFunction,
    NamedToolChoice,
    TextPart,
    ToolCall,
    ToolDefinition,
)
from endpoints.OAI.types.common import JsonSchemaFormat, ResponseFormat
from endpoints.OAI.types.responses import (
    InputContent,
    InputItem,
    ResponsesRequest,
    ResponsesTool,
)

TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")


def _parts(parts: list[InputContent], param: str) -> list[ContentPart]:
    result: list[ContentPart] = []
    for part in parts:
        if part.type in TEXT_PARTS:
            result.append(TextPart(type="text", text=part.text or ""))
        elif part.type == "refusal":
            result.append(TextPart(type="text", text=part.refusal or ""))
        elif part.type == "input_image" and part.image_url:
            result.append(ImagePart(type="image_url", image_url=ImageUrl(url=part.image_url)))
        else:
            raise UnsupportedError(
                f"Content parts of type {part.type!r} are not supported.", param=param
            )
    return result


def _text(content: str | list[InputContent] | None, param: str) -> str:
    """Text content (a call's output): the text parts joined."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.text for part in _parts(content, param) if isinstance(part, TextPart))


class _Conversation:
    """Chat messages added up from input items."""

    def __init__(self, messages: list[ChatMessage]) -> None:
        self.messages = messages
        self.reasoning = ""  # from reasoning items, for the next assistant message

    def add(self, item: InputItem, index: int) -> None:
        param = f"input[{index}]"
        if item.type == "message":
            self._message(item, param)
        elif item.type == "function_call":
            if not item.call_id or not item.name:
                raise BadRequestError("A function_call item needs call_id and name.", param=param)
            call = ToolCall(
                id=item.call_id,
                function=FunctionCall(name=item.name, arguments=item.arguments or "{}"),
            )
            last = self.messages[-1] if self.messages else None
            if last is not None and last.role == "assistant" and not self.reasoning:
                last.tool_calls = [*(last.tool_calls or []), call]
            else:
                self._assistant(None).tool_calls = [call]
        elif item.type == "function_call_output":
            if not item.call_id:
                raise BadRequestError("A function_call_output item needs call_id.", param=param)
            self.messages.append(
                ChatMessage(
                    role="tool", tool_call_id=item.call_id, content=_text(item.output, param)
                )
            )
        elif item.type == "reasoning":
            self.reasoning += _text(item.content, param) or _text(item.summary or [], param)
        elif item.type == "item_reference":
            raise UnsupportedError(
                "item_reference items are not supported: send the items themselves, or "
                "previous_response_id.",
                param=param,
            )
        else:
            raise UnsupportedError(
                f"Input items of type {item.type!r} are not supported.", param=param
            )

    def _message(self, item: InputItem, param: str) -> None:
        if item.role is None:
            raise BadRequestError("A message item needs a role.", param=param)
        content = (
            item.content if isinstance(item.content, str) else _parts(item.content or [], param)
        )
        if item.role == "assistant":
            self._assistant(content)
        else:
            self.messages.append(ChatMessage(role=item.role, content=content))

    def _assistant(self, content: str | list[ContentPart] | None) -> ChatMessage:
        message = ChatMessage(
            role="assistant", content=content, reasoning_content=self.reasoning or None
        )
        self.reasoning = ""
        self.messages.append(message)
        return message


def conversation_of(body: ResponsesRequest, earlier: list[ChatMessage]) -> list[ChatMessage]:
    """The conversation so far: ``earlier`` (a stored one) and then the body's input."""
    conversation = _Conversation([message.model_copy(deep=True) for message in earlier])
    if isinstance(body.input, str):
        conversation.messages.append(ChatMessage(role="user", content=body.input))
    else:
        for index, item in enumerate(body.input):
            conversation.add(item, index)
    if not conversation.messages:
        raise BadRequestError("The input is empty.", param="input")
    return conversation.messages


def _functions(body: ResponsesRequest) -> list[tuple[str | None, ResponsesTool, str]]:
    """Every function tool with the namespace it is in (``None``: top level) and its place."""
    functions: list[tuple[str | None, ResponsesTool, str]] = []
    others: set[str] = set()
    for index, tool in enumerate(body.tools or []):
        if tool.type == "namespace":
            if not tool.name:
                raise BadRequestError(
                    "A namespace tool needs a name.", param=f"tools[{index}].name"
                )
            for inner_index, inner in enumerate(tool.tools or []):
                if inner.type == "function":
                    functions.append((tool.name, inner, f"tools[{index}].tools[{inner_index}]"))
                else:
                    others.add(inner.type)
        elif tool.type == "function":
            functions.append((None, tool, f"tools[{index}]"))
        else:
            others.add(tool.type)
    if others:
        raise UnsupportedError(
            f"Serval runs function tools only; not supported: {', '.join(sorted(others))}.",
            param="tools",
        )
    return functions


def tool_namespaces(body: ResponsesRequest) -> dict[str, str]:
    """The namespace of each function tool that is in one, by the function's name."""
    return {tool.name: space for space, tool, _ in _functions(body) if space and tool.name}


def _tools(body: ResponsesRequest) -> list[ToolDefinition] | None:
    """The chat tools: function tools, and those of namespaces flattened (a call names the
    function alone; its answer item names the namespace back)."""
    if body.tools is None:
        return None
    tools: list[ToolDefinition] = []
    seen: set[str] = set()
    for _, tool, where in _functions(body):
        if not tool.name:
            raise BadRequestError("A function tool needs a name.", param=f"{where}.name")
        if tool.name in seen:
            raise BadRequestError(
                f"Two function tools are named {tool.name!r}.", param=f"{where}.name"
            )
        seen.add(tool.name)
        function = FunctionDefinition(
            name=tool.name,
            description=tool.description,
            parameters=tool.parameters,
            strict=tool.strict,
        )
        tools.append(ToolDefinition(function=function))
    return tools


def _tool_choice(body: ResponsesRequest) -> Any:
    choice = body.tool_choice
    if choice is None or isinstance(choice, str):
        return choice
    if choice.type != "function" or not choice.name:
        raise UnsupportedError(
            f"tool_choice of type {choice.type!r} is not supported: use none, auto, required "
            'or {"type": "function", "name": ...}.',
            param="tool_choice",
        )
    return NamedToolChoice(function=NamedFunction(name=choice.name))


def _effort(effort: str | None) -> str | None:
    """The chat route's effort: ``xhigh`` and ``max`` are its ``high``; ``none`` turns
    thinking off instead."""
    if effort in ("xhigh", "max"):
        return "high"
    return None if effort == "none" else effort


def _response_format(body: ResponsesRequest) -> ResponseFormat | None:
    fmt = body.text.format if body.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    schema = JsonSchemaFormat(
        name=fmt.name or "response",
        description=fmt.description,
        schema=fmt.schema_ or {},
        strict=fmt.strict,
    )
    return ResponseFormat(type="json_schema", json_schema=schema)


def chat_request(body: ResponsesRequest, conversation: list[ChatMessage]) -> ChatCompletionRequest:
    """The chat request ``body`` stands for, over ``conversation``."""
    if body.background:
        raise UnsupportedError("Background responses are not supported.", param="background")
    if body.conversation is not None:
        raise UnsupportedError(
            "Conversations are not supported: use previous_response_id.", param="conversation"
        )
    sampler = {
        name: value
        for name, value in body
        if name in SamplerRequest.model_fields and value is not None
    }
    if body.max_output_tokens is not None:
        sampler["max_tokens"] = body.max_output_tokens
    effort = body.reasoning.effort if body.reasoning else None
    system = [ChatMessage(role="system", content=body.instructions)] if body.instructions else []
    chat = ChatCompletionRequest.model_validate(
        {
            **sampler,
            "model": body.model,
            "messages": [*system, *conversation],
            "tools": _tools(body),
            "tool_choice": _tool_choice(body),
            "parallel_tool_calls": body.parallel_tool_calls,
            "response_format": _response_format(body),
            "reasoning_effort": _effort(effort),
            "enable_thinking": False if effort == "none" else None,
            "reasoning_budget_tokens": body.reasoning_budget_tokens,
            "stream": body.stream,
        }
    )
    chat._not_applied = body.not_applied
    return chat
