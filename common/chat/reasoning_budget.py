"""A cap on how many tokens a model may spend reasoning.

The engine interface has no way to force tokens into a running job, so the budget is kept one
level up: the job's output is followed, and when the reasoning block has used up its tokens the
job is ended and a second one continues from the same point, its prompt being the first prompt,
the tokens generated so far and the end tag. The end tag shows up in the output as if the model
had written it, and the answer follows. Both jobs run with the same settings (a CFG job's
negative prompt continues the same way) and the answer keeps the first job's ``max_tokens``
(the end tag counts toward it).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace

from backends.base import GenerationChunk, GenerationRequest, GenerationStats, GrammarSpec
from common.chat.reasoning import ReasoningSplitter
from common.generation import JobRunner


@dataclass(frozen=True)
class ReasoningBudget:
    """``tokens`` of reasoning at most; ``closing_text``/``closing_ids`` end the block."""

    tokens: int
    start_tag: str
    end_tag: str
    starts_inside: bool
    closing_text: str
    closing_ids: tuple[int, ...]
    answer_grammar: GrammarSpec | None = None  # the grammar for what follows the block


class BudgetedRunner:
    """A :class:`~common.generation.JobRunner` that ends reasoning at its budget."""

    def __init__(self, source: JobRunner, budget: ReasoningBudget) -> None:
        self.source = source
        self.budget = budget

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk]:
        budget = self.budget
        tracker = ReasoningSplitter(budget.start_tag, budget.end_tag, budget.starts_inside)
        generated: list[int] = []
        spent = 0
        if not (budget.tokens <= 0 and tracker.in_reasoning):
            async with contextlib.aclosing(self.source.generate(request)) as chunks:
                async for chunk in chunks:
                    counted = tracker.in_reasoning
                    tracker.feed(chunk.text)
                    if counted or tracker.in_reasoning:
                        spent += len(chunk.token_ids)
                    generated += chunk.token_ids
                    yield chunk
                    if chunk.finish_reason is not None:
                        return
                    if tracker.in_reasoning and spent >= budget.tokens:
                        break
        async with contextlib.aclosing(self._answer(request, generated)) as answer:
            async for chunk in answer:
                yield chunk

    async def _answer(
        self, request: GenerationRequest, generated: list[int]
    ) -> AsyncGenerator[GenerationChunk]:
        """The end tag, then a job that continues after it."""
        budget = self.budget
        closing = list(budget.closing_ids)
        yield GenerationChunk(text=budget.closing_text, token_ids=closing)
        used = len(generated) + len(closing)
        left = request.max_new_tokens - used
        if left <= 0:
            stats = GenerationStats(len(request.prompt_ids), used)
            yield GenerationChunk(finish_reason="length", stats=stats)
            return
        params = request.params
        if params.cfg:  # the negative prompt's sequence has read the same tokens since
            negative = (*params.negative_prompt_ids, *generated, *closing)
            params = replace(params, negative_prompt_ids=negative)
        continuation = replace(
            request,
            request_id=f"{request.request_id}-answer",
            prompt_ids=[*request.prompt_ids, *generated, *closing],
            params=params,
            max_new_tokens=left,
            grammar=budget.answer_grammar,
            prompt_logprobs=False,
        )
        async with contextlib.aclosing(self.source.generate(continuation)) as chunks:
            async for chunk in chunks:
                if chunk.stats is not None:
                    stats = replace(
                        chunk.stats,
                        prompt_tokens=len(request.prompt_ids),
                        completion_tokens=chunk.stats.completion_tokens + used,
                    )
                    chunk = replace(chunk, stats=stats)
                yield chunk
