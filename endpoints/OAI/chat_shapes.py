"""Reasoning, content and tool calls in the OpenAI chat shapes: whole messages and deltas.

In a stream a call's first delta carries its ``id``, ``type`` and ``function.name`` (and
``arguments: ""``), later ones only ``index`` and the next piece of ``function.arguments``: the
shape the OpenAI SDKs add up. Legacy ``functions`` requests get ``function_call`` instead.
"""

from __future__ import annotations

from common.chat.output import ChatOutput, OutputDelta
from endpoints.OAI.types.chat import (
    ChatDelta,
    DeltaFunctionCall,
    DeltaToolCall,
    FunctionCall,
    ResponseMessage,
    ToolCall,
)


def response_message(output: ChatOutput, legacy: bool) -> ResponseMessage:
    calls = output.tool_calls
    message = ResponseMessage(
        content=output.content if output.content or not (calls or output.reasoning) else None,
        reasoning_content=output.reasoning or None,
    )
    if legacy and calls:
        message.function_call = FunctionCall(name=calls[0].name, arguments=calls[0].arguments)
    elif calls:
        message.tool_calls = [
            ToolCall(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))
            for call in calls
        ]
    return message


def chat_delta(delta: OutputDelta, legacy: bool) -> ChatDelta:
    result = ChatDelta(content=delta.content or None, reasoning_content=delta.reasoning or None)
    if legacy:
        for piece in delta.tool_calls:
            if piece.index == 0:
                result.function_call = DeltaFunctionCall(name=piece.name, arguments=piece.arguments)
    elif delta.tool_calls:
        result.tool_calls = [
            DeltaToolCall(
                index=piece.index,
                id=piece.id,
                type="function" if piece.id else None,
                function=DeltaFunctionCall(name=piece.name, arguments=piece.arguments),
            )
            for piece in delta.tool_calls
        ]
    return result


def finish_reason(engine_reason: str | None, called: bool, legacy: bool) -> str | None:
    """``tool_calls`` (or ``function_call``) when a call ended the answer."""
    if engine_reason == "stop" and called:
        return "function_call" if legacy else "tool_calls"
    return engine_reason
