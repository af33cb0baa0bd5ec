"""The tool fields of a chat request, as one :class:`~common.chat.tools.choice.ToolChoice`.

``tools`` / ``tool_choice`` / ``parallel_tool_calls``, or the legacy ``functions`` /
``function_call`` (which allow one call, answered as ``message.function_call``).
"""

from __future__ import annotations

from common.chat.tools.choice import FunctionSpec, ToolChoice, tool_choice
from common.errors import BadRequestError
from endpoints.OAI.types.chat import (
    ChatCompletionRequest,
    FunctionDefinition,
    NamedFunction,
    NamedToolChoice,
)


def _spec(function: FunctionDefinition) -> FunctionSpec:
    return FunctionSpec(function.name, function.parameters or {}, bool(function.strict))


def uses_legacy_functions(body: ChatCompletionRequest) -> bool:
    return bool(body.functions)


def tool_choice_of(body: ChatCompletionRequest) -> ToolChoice | None:
    """What the request allows the model to call; None when it offers no tools."""
    if body.tools and body.functions:
        raise BadRequestError("Send tools or functions, not both.", param="functions")
    if body.functions:
        return _choice(
            [_spec(f) for f in body.functions], body.function_call, False, "function_call"
        )
    if body.tools:
        functions = [_spec(t.function) for t in body.tools]
        return _choice(functions, body.tool_choice, body.parallel_tool_calls, "tool_choice")
    if isinstance(body.tool_choice, NamedToolChoice) or body.tool_choice == "required":
        raise BadRequestError("tool_choice needs tools to choose from.", param="tool_choice")
    return None


def _choice(
    functions: list[FunctionSpec],
    choice: str | NamedToolChoice | NamedFunction | None,
    parallel: bool,
    param: str,
) -> ToolChoice:
    if isinstance(choice, NamedToolChoice):
        return tool_choice(functions, "function", choice.function.name, parallel, param)
    if isinstance(choice, NamedFunction):
        return tool_choice(functions, "function", choice.name, parallel, param)
    mode = choice or "auto"
    return tool_choice(functions, mode, None, parallel, param)  # type: ignore[arg-type]
