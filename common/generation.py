"""From a resolved request to engine jobs: limits, stops and clamping shared by every API.

Everything here runs before a response starts, so that bad input becomes a 4xx with a clear
message instead of an error in the middle of a stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from loguru import logger

from backends.base import (
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
    GrammarSpec,
    ImageInput,
    ModelView,
    TokenLogprob,
)
from backends.sampling import SamplingParams
from common.config import LimitsConfig
from common.errors import BadRequestError, ContextLengthError


class JobRunner(Protocol):
    """Anything that runs a job: an engine, or a lease on one (which also records metrics)."""

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk]: ...


def _check_ids(ids: Sequence[int], vocab: int, param: str) -> None:
    for token in ids:
        if not 0 <= token < vocab:
            raise BadRequestError(
                f"Token id {token} is outside the vocabulary (0..{vocab - 1}).", param=param
            )


def check_prompt_ids(ids: Sequence[int], model: ModelView, param: str = "prompt") -> None:
    if not ids:
        raise BadRequestError("The prompt is empty.", param=param)
    _check_ids(ids, model.vocab_size, param)


def check_limits(params: SamplingParams, model: ModelView, limits: LimitsConfig) -> None:
    """Caps from the config and token ids that must exist in the model's vocabulary."""
    if len(params.stop) > limits.max_stop:
        raise BadRequestError(
            f"At most {limits.max_stop} stop sequences are allowed.", param="stop"
        )
    if len(params.banned_strings) > limits.max_stop * 8:
        raise BadRequestError("Too many banned_strings.", param="banned_strings")
    for name, strings in (("stop", params.stop), ("banned_strings", params.banned_strings)):
        for item in strings:
            if isinstance(item, str) and len(item) > limits.max_stop_length:
                raise BadRequestError(
                    f"{name} entries may be at most {limits.max_stop_length} characters.",
                    param=name,
                )
    vocab = model.vocab_size
    _check_ids([s for s in params.stop if isinstance(s, int)], vocab, "stop")
    _check_ids(params.banned_tokens, vocab, "banned_tokens")
    _check_ids(params.allowed_tokens, vocab, "allowed_tokens")
    _check_ids([token for token, _ in params.logit_bias], vocab, "logit_bias")
    if params.max_tokens is not None and params.min_tokens > params.max_tokens:
        raise BadRequestError("min_tokens cannot be larger than max_tokens.", param="min_tokens")
    _check_a_token_is_left(params, vocab)


BANNING_BIAS = -100  # OpenAI: "-100 should result in a ban or exclusive selection"


def _check_a_token_is_left(params: SamplingParams, vocab: int) -> None:
    """Refuse settings that ban every token: the sampler would still have to pick a banned one
    (a -100 bias on every token shifts them all alike, so it bans nothing)."""
    banned = set(params.banned_tokens)
    banned |= {token for token, bias in params.logit_bias if bias <= BANNING_BIAS}
    if params.allowed_tokens:
        if set(params.allowed_tokens) <= banned:
            raise BadRequestError(
                "Every token in allowed_tokens is banned (banned_tokens or a logit_bias of -100): "
                "nothing could be generated.",
                param="allowed_tokens",
            )
    elif len(banned) >= vocab:
        raise BadRequestError(
            f"Every token of the vocabulary ({vocab}) is banned by banned_tokens or a logit_bias "
            "of -100: nothing could be generated.",
            param="banned_tokens" if params.banned_tokens else "logit_bias",
        )


@dataclass(frozen=True)
class JobOptions:
    """What a job reports and what constrains it, beside its prompt and sampler settings."""

    logprobs: int | None = None
    prompt_logprobs: bool = False
    grammar: GrammarSpec | None = None
    generate_nothing: bool = False  # echo with max_tokens 0: the prompt's logprobs only
    images: tuple[ImageInput, ...] = ()  # the prompt's images (chat with a vision model)


PLAIN_JOB = JobOptions()


def build_request(
    model: ModelView,
    request_id: str,
    prompt_ids: list[int],
    params: SamplingParams,
    limits: LimitsConfig,
    options: JobOptions = PLAIN_JOB,
) -> GenerationRequest:
    """A job for ``model``: the prompt (and a CFG job's negative prompt) must fit,
    ``max_tokens`` is clamped to what is left."""
    max_seq_len = model.info().max_seq_len
    negative = len(params.negative_prompt_ids)
    for what, length in (("prompt", len(prompt_ids)), ("negative prompt", negative)):
        if length >= max_seq_len:
            raise ContextLengthError(
                f"This model's maximum context length is {max_seq_len} tokens, but the {what} "
                f"has {length} tokens.",
                param=what.replace(" ", "_"),
            )
    room = max_seq_len - max(len(prompt_ids), negative)  # with CFG both sequences grow
    if params.max_tokens and params.max_tokens > max_seq_len:
        raise ContextLengthError(
            f"max_tokens ({params.max_tokens}) is larger than this model's context length "
            f"({max_seq_len} tokens).",
            param="max_tokens",
        )
    wanted = params.max_tokens or room
    if limits.max_tokens:
        wanted = min(wanted, limits.max_tokens)
    max_new = 0 if options.generate_nothing else min(wanted, room)
    stop_ids = {s for s in params.stop if isinstance(s, int)}
    stop_ids |= set(model.special_tokens.eos_ids)
    return GenerationRequest(
        request_id=request_id,
        prompt_ids=prompt_ids,
        params=params,
        max_new_tokens=max_new,
        stop_strings=tuple(s for s in params.stop if isinstance(s, str)),
        stop_token_ids=frozenset(stop_ids),
        logprobs=options.logprobs,
        prompt_logprobs=options.prompt_logprobs,
        grammar=options.grammar,
        images=options.images,
    )


UNSUPPORTED_HEADER = "X-Serval-Unsupported-Params"


def unsupported_report(model: ModelView, params: SamplingParams, request_id: str) -> dict[str, str]:
    """Sampler settings the engine cannot apply, and those no engine applies: logged, and a
    response header naming them."""
    names = [*params.not_applied, *model.unsupported_params(params)]
    if not names:
        return {}
    logger.warning(
        f"{request_id[:8]} the {model.backend} engine does not apply: {', '.join(names)}"
    )
    return {UNSUPPORTED_HEADER: ",".join(names)}


def seeded(params: SamplingParams, index: int) -> SamplingParams:
    """Choice ``index`` of a request with a seed gets its own, reproducible seed."""
    if params.seed is None or index == 0:
        return params
    return replace(params, seed=params.seed + index)


@dataclass
class Completion:
    """Everything one job produced, collected (for non-streaming answers)."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    stats: GenerationStats | None = None

    def add(self, chunk: GenerationChunk) -> None:
        self.text += chunk.text
        self.token_ids += chunk.token_ids
        if chunk.logprobs:
            self.logprobs += chunk.logprobs
        if chunk.prompt_logprobs is not None:
            self.prompt_logprobs = chunk.prompt_logprobs
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            self.stop_reason = chunk.stop_reason
            self.stats = chunk.stats


async def collect(source: JobRunner, request: GenerationRequest) -> Completion:
    completion = Completion()
    async for chunk in source.generate(request):
        completion.add(chunk)
    return completion


async def collect_all(source: JobRunner, requests: list[GenerationRequest]) -> list[Completion]:
    """Run every job at once; if one fails the others are cancelled."""
    tasks = [asyncio.ensure_future(collect(source, request)) for request in requests]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def merge_streams(
    source: JobRunner, requests: list[GenerationRequest]
) -> AsyncGenerator[tuple[int, GenerationChunk]]:
    """Chunks of several jobs as they come, tagged with the job's index.

    Closing the iterator (a client that went away) cancels every job.
    """
    if len(requests) == 1:
        async for chunk in source.generate(requests[0]):
            yield 0, chunk
        return
    queue: asyncio.Queue[tuple[int, GenerationChunk | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, request: GenerationRequest) -> None:
        try:
            async for chunk in source.generate(request):
                await queue.put((index, chunk))
        except Exception as exc:
            await queue.put((index, exc))
        else:
            await queue.put((index, None))

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(requests)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
