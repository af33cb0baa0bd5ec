"""What a request allows the model to call, independent of any API's field names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from common.errors import BadRequestError

ChoiceMode = Literal["none", "auto", "required", "function"]


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    parameters: dict[str, Any]
    strict: bool = False


@dataclass(frozen=True)
class ToolChoice:
    """The functions on offer and how the model must use them.

    ``required`` asks for at least one call, ``function`` for one call of ``function``;
    ``parallel`` False allows one call at most.
    """

    functions: tuple[FunctionSpec, ...]
    mode: ChoiceMode = "auto"
    function: str | None = None
    parallel: bool = True

    @property
    def parses_calls(self) -> bool:
        return bool(self.functions) and self.mode != "none"

    @property
    def forced(self) -> bool:
        return self.mode in ("required", "function")

    @property
    def constrained(self) -> bool:
        """Whether generation follows a grammar: forced calls, or strict functions."""
        if not self.parses_calls:
            return False
        return self.forced or any(f.strict for f in self.functions)

    def callable_functions(self) -> tuple[FunctionSpec, ...]:
        if self.mode == "function":
            return tuple(f for f in self.functions if f.name == self.function)
        return self.functions


def tool_choice(
    functions: list[FunctionSpec],
    mode: ChoiceMode,
    function: str | None = None,
    parallel: bool = True,
    param: str = "tool_choice",
) -> ToolChoice:
    """A checked :class:`ToolChoice`: forced calls need functions, a named one must exist."""
    names = [f.name for f in functions]
    if len(set(names)) != len(names):
        raise BadRequestError("Function names must be unique.", param="tools")
    if mode in ("required", "function") and not functions:
        raise BadRequestError(f"{param} {mode!r} needs tools to call.", param=param)
    if mode == "function" and function not in names:
        raise BadRequestError(f"{param} names {function!r}, which is not in tools.", param=param)
    return ToolChoice(tuple(functions), mode, function if mode == "function" else None, parallel)
