"""How a chat answer is generated and read back: reasoning, tool calls, grammar and budget.

Decided once per request, after the prompt is rendered: whether the answer starts with (or
may start with) a reasoning block, whether tool calls are parsed and in which format, which
grammar constrains generation, and whether reasoning has a token budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backends.base import GrammarSpec, ModelView
from common.chat.output import ChatOutputParser
from common.chat.reasoning import ReasoningSplitter, prompt_opens_reasoning
from common.chat.reasoning_budget import ReasoningBudget
from common.chat.tools.choice import ToolChoice
from common.chat.tools.formats import ToolFormat
from common.chat.tools.grammar import (
    ReasoningSyntax,
    SpecialId,
    answer_grammar,
    special_token_id,
    tool_call_grammar,
)
from common.config import ModelConfig
from common.errors import GrammarError
from common.grammar import DEFAULT_BOUNDS, GrammarBounds, build_grammar


@dataclass(frozen=True)
class Constraints:
    """The structured-output constraints a request set itself."""

    json_schema: dict[str, Any] | None = None
    regex_pattern: str | None = None
    grammar_string: str | None = None
    bounds: GrammarBounds = DEFAULT_BOUNDS


@dataclass(frozen=True)
class OutputPlan:
    reasoning: ReasoningSyntax | None
    tool_format: ToolFormat | None  # None: tool calls are not parsed
    tool_choice: ToolChoice | None

    def parser(self) -> ChatOutputParser:
        """A fresh parser for one choice."""
        reasoning = self.reasoning
        splitter = (
            ReasoningSplitter(reasoning.start, reasoning.end, reasoning.opened)
            if reasoning
            else None
        )
        tools = self.tool_format.make_parser() if self.tool_format else None
        return ChatOutputParser(splitter, tools)


def output_plan(
    prompt: str, model: ModelConfig, choice: ToolChoice | None, fmt: ToolFormat
) -> OutputPlan:
    """Reasoning when ``model.reasoning`` is on or the prompt opened the block itself."""
    start, end = model.reasoning_start_token, model.reasoning_end_token
    opened = prompt_opens_reasoning(prompt, start, end)
    reasoning = ReasoningSyntax(start, end, opened) if model.reasoning or opened else None
    parses = choice is not None and choice.parses_calls
    return OutputPlan(reasoning, fmt if parses else None, choice if parses else None)


def output_grammar(
    plan: OutputPlan,
    constraints: Constraints,
    special_id: SpecialId,
    after_reasoning: bool = False,
) -> GrammarSpec | None:
    """The grammar for the answer; ``after_reasoning``: for the part after the block only."""
    reasoning = None if after_reasoning else plan.reasoning
    choice, fmt = plan.tool_choice, plan.tool_format
    # Forced or strict calls follow their schemas; with a JSON answer format as well, the
    # answer is calls or that JSON.
    if choice is not None and fmt is not None and (choice.constrained or constraints.json_schema):
        if constraints.regex_pattern or constraints.grammar_string:
            raise GrammarError(
                "regex_pattern and grammar_string cannot be combined with tools whose calls "
                "are constrained (tool_choice required or named, strict functions, or a JSON "
                "response_format).",
                param="tool_choice",
            )
        return tool_call_grammar(
            fmt, choice, special_id, reasoning, constraints.json_schema, constraints.bounds
        )
    if reasoning is not None and constraints.json_schema:
        return answer_grammar(constraints.json_schema, special_id, reasoning, constraints.bounds)
    return build_grammar(
        constraints.json_schema,
        constraints.regex_pattern,
        constraints.grammar_string,
        constraints.bounds,
    )


def _reasoning_budget(
    plan: OutputPlan, tokens: int, model: ModelView, answer: GrammarSpec | None
) -> ReasoningBudget:
    reasoning = plan.reasoning
    assert reasoning is not None
    closing = f"\n{reasoning.end}\n\n"
    return ReasoningBudget(
        tokens=tokens,
        start_tag=reasoning.start,
        end_tag=reasoning.end,
        starts_inside=reasoning.opened,
        closing_text=closing,
        closing_ids=tuple(model.encode(closing, add_bos=False)),
        answer_grammar=answer,
    )


def generation_controls(
    plan: OutputPlan, constraints: Constraints, model: ModelView, budget_tokens: int | None
) -> tuple[GrammarSpec | None, ReasoningBudget | None]:
    """The grammar of the answer, and the reasoning budget (None: no limit, or no reasoning).

    Blocking (grammars are compiled and checked): call it through
    :func:`common.grammar.compile_grammar`.
    """

    def special_id(text: str) -> int | None:
        return special_token_id(model, text)

    grammar = output_grammar(plan, constraints, special_id)
    if plan.reasoning is None or budget_tokens is None:
        return grammar, None
    answer = grammar and output_grammar(plan, constraints, special_id, after_reasoning=True)
    return grammar, _reasoning_budget(plan, budget_tokens, model, answer)
