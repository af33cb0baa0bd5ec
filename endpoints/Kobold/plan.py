"""From a Kobold request to engine jobs.

Kobold's own settings are turned into the shared sampler settings, the prompt (after the
optional ``memory``) is cut from the left to fit ``max_context_length`` as KoboldCpp does, and
the jobs are built by ``common/jobs.py`` like every other API's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace

from backends.base import GenerationRequest
from backends.sampling import SamplingParams
from common.errors import BadRequestError
from common.generation import JobOptions, check_prompt_ids, merge_streams, unsupported_report
from common.jobs import jobs_for, request_grammar, sampling
from common.model import Lease
from common.tokenizing import encode_text, keep_end
from endpoints.Kobold.jobs import Update
from endpoints.Kobold.types.generation import (
    DEFAULT_MAX_LENGTH,
    KOBOLD_TOP_LOGPROBS,
    GenerateRequest,
)
from endpoints.state import ServerState


def generation_budget(
    max_context_length: int | None, max_seq_len: int, max_length: int
) -> tuple[int, int]:
    """(prompt tokens allowed, tokens to generate), as KoboldCpp computes them.

    The context is the request's ``max_context_length``, at most the model's. A ``max_length``
    that would leave fewer than 16 prompt tokens (fewer for a tiny context) is shortened.
    """
    context = min(max_context_length or max_seq_len, max_seq_len)
    reserve = max(min(context - 4, 16), 1)
    length = max(min(max_length, context - reserve), 1)
    return context - length, length


def keep_tail(ids: Sequence[int], budget: int, bos_id: int | None) -> list[int]:
    """The last ``budget`` tokens of ``ids``; a leading BOS stays in front."""
    if len(ids) <= budget:
        return list(ids)
    if bos_id is not None and ids[0] == bos_id:
        return [bos_id, *ids[len(ids) - budget + 1 :]] if budget > 1 else [bos_id]
    return list(ids[len(ids) - budget :])


def fit_prompt(
    memory_ids: Sequence[int], prompt_ids: Sequence[int], budget: int, bos_id: int | None
) -> list[int]:
    """Memory, then as much of the end of the prompt as fits in ``budget`` tokens."""
    if not memory_ids:
        return keep_tail(prompt_ids, budget, bos_id)
    if bos_id is not None and prompt_ids[:1] == [bos_id]:
        prompt_ids = prompt_ids[1:]
    memory = keep_tail(memory_ids, budget, bos_id)
    room = budget - len(memory)
    return memory + list(prompt_ids[max(len(prompt_ids) - room, 0) :]) if room > 0 else memory


def kobold_params(body: GenerateRequest, params: SamplingParams) -> SamplingParams:
    """Kobold's settings that have no shared field: sampler order and dynamic temperature range."""
    order = body.sampler_names()
    if order is not None:
        params = replace(params, sampler_order=order)
    spread = body.dynatemp_range
    if spread and not params.dynamic_temperature:
        base = params.temperature
        params = replace(params, min_temp=max(base - spread, 0.0), max_temp=base + spread)
    return params


class KoboldPlan:
    """The prompt, settings and jobs of one Kobold generation request."""

    def __init__(self, body: GenerateRequest, lease: Lease, state: ServerState, stream: bool):
        limits = state.config.limits
        if body.n > limits.max_n:
            raise BadRequestError(f"n may be at most {limits.max_n}.", param="n")
        if stream and body.n > 1:
            raise BadRequestError("A stream carries one text: n must be 1.", param="n")
        params = kobold_params(body, sampling(body, state.overrides.preset, lease, limits))
        budget, length = generation_budget(
            body.max_context_length,
            lease.context_length,
            params.max_tokens or DEFAULT_MAX_LENGTH,
        )
        self.params = replace(params, max_tokens=length)
        self.budget = budget
        self.prompt_ids: list[int] = []  # tokenized by jobs(), off the event loop
        self.body = body
        self.lease = lease
        self.state = state

    async def _prompt(self, body: GenerateRequest, budget: int) -> list[int]:
        """Memory and prompt tokenized in a worker thread; of text longer than the budget could
        hold only the end is tokenized, as only the end is kept."""
        add_bos = self.params.add_bos_token
        limits = self.state.config.limits
        memory: list[int] = []
        if body.memory:
            memory = await encode_text(
                self.lease, keep_end(body.memory, budget, limits), limits, add_bos=add_bos
            )
        prompt = await encode_text(
            self.lease,
            keep_end(body.prompt, budget, limits),
            limits,
            add_bos=False if memory else add_bos,
        )
        ids = fit_prompt(memory, prompt, budget, self.lease.special_tokens.bos_id)
        check_prompt_ids(ids, self.lease)
        return ids

    def unsupported(self, request_id: str) -> dict[str, str]:
        """Settings the engine cannot apply: logged, and a response header naming them."""
        return unsupported_report(self.lease, self.params, request_id)

    async def jobs(self, request_id: str) -> list[GenerationRequest]:
        self.prompt_ids = await self._prompt(self.body, self.budget)
        limits = self.state.config.limits
        return await jobs_for(
            self.lease,
            request_id,
            [self.prompt_ids],
            self.body.n,
            self.params,
            limits,
            JobOptions(
                logprobs=KOBOLD_TOP_LOGPROBS if self.body.logprobs else None,
                grammar=await request_grammar(self.params, limits),
            ),
        )

    async def chunks(self, jobs: list[GenerationRequest]) -> AsyncGenerator[Update]:
        """The jobs' chunks; without ``trim_stop`` the stop sequence that ended a text stays."""
        keep_stop = not self.body.trim_stop
        async with contextlib.aclosing(merge_streams(self.lease, jobs)) as merged:
            async for index, chunk in merged:
                if keep_stop and isinstance(chunk.stop_reason, str):
                    chunk = replace(chunk, text=chunk.text + chunk.stop_reason)
                yield index, chunk
