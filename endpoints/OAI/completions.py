"""``POST /v1/completions``: text in, text out, for one or many prompts and choices."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response

from backends.base import GenerationRequest
from common.errors import BadRequestError, UnsupportedError
from common.generation import Completion, JobOptions, JobRunner, merge_streams
from common.images import refuse_images
from common.jobs import jobs_for, prompt_ids, request_grammar, sampling
from common.model import Lease
from endpoints.dependencies import REQUIRE_API, get_state
from endpoints.OAI.delivery import OPENAI_STREAM, generation_route, serve
from endpoints.OAI.shapes import fingerprint, legacy_logprobs, new_id, now, usage_of
from endpoints.OAI.types.common import schema_of
from endpoints.OAI.types.completion import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
)
from endpoints.state import ServerState

router = APIRouter(tags=["OpenAI"], dependencies=REQUIRE_API)


def _check_request(body: CompletionRequest, state: ServerState) -> None:
    refuse_images(body.images, "Completion")
    limits = state.config.limits
    prompts = body.prompt if isinstance(body.prompt, list) else [body.prompt]
    if not prompts:
        raise BadRequestError("The prompt is empty.", param="prompt")
    if len(body.prompts()) > limits.max_prompts:
        raise BadRequestError(f"At most {limits.max_prompts} prompts per request.", param="prompt")
    if body.n > limits.max_n:
        raise BadRequestError(f"n may be at most {limits.max_n}.", param="n")
    if body.best_of is not None and body.best_of != body.n:
        raise UnsupportedError("best_of other than n is not supported.", param="best_of")
    if body.logprobs is not None and body.logprobs > limits.max_logprobs:
        raise BadRequestError(f"logprobs may be at most {limits.max_logprobs}.", param="logprobs")
    if body.suffix:
        raise UnsupportedError(
            "suffix is not supported: the model's template has no fill-in-the-middle format.",
            param="suffix",
        )


class _CompletionAnswer:
    """The jobs of one completion request and the answer made of them (see ``delivery.Answer``)."""

    style = OPENAI_STREAM

    def __init__(self, body: CompletionRequest, lease: Lease, state: ServerState) -> None:
        self.limits = state.config.limits
        self.params = sampling(body, state.overrides.preset, lease, self.limits)
        self.body = body
        self.lease = lease
        self.runner: JobRunner = lease
        self.model = lease.name
        self.prompt_ids: list[list[int]] = []  # tokenized by jobs(), off the event loop
        self.prompt_texts: list[str] = []  # what echo repeats; token prompts decoded once checked
        self.id = new_id("cmpl")
        self.created = now()

    async def jobs(self, request_id: str) -> list[GenerationRequest]:
        body, add_bos = self.body, self.params.add_bos_token
        self.prompt_ids = [
            await prompt_ids(self.lease, p, self.limits, add_bos=add_bos) for p in body.prompts()
        ]
        self.prompt_texts = [
            p if isinstance(p, str) else self.lease.decode(ids)
            for p, ids in zip(body.prompts(), self.prompt_ids, strict=True)
        ]
        grammar = await request_grammar(self.params, self.limits, schema_of(body.response_format))
        return await jobs_for(
            self.lease,
            request_id,
            self.prompt_ids,
            body.n,
            self.params,
            self.limits,
            JobOptions(
                logprobs=body.logprobs,
                prompt_logprobs=body.echo and body.logprobs is not None,
                grammar=grammar,
                generate_nothing=body.echo and body.max_tokens == 0,
            ),
        )

    def streamed(self, jobs: list[GenerationRequest]) -> AsyncIterator[dict[str, Any]]:
        return _stream(self, jobs)

    def answered(self, completions: list[Completion]) -> CompletionResponse:
        return _response(self, completions)

    def prompt_of(self, index: int) -> int:
        return index // self.body.n

    def echo_text(self, index: int) -> str:
        return self.prompt_texts[self.prompt_of(index)] if self.body.echo else ""

    def logprobs(self, index: int, completion: Completion, offset: int = 0) -> Any:
        if self.body.logprobs is None:
            return None
        records: list[Any] = list(completion.logprobs)
        prompt_ids: list[int] = []
        if self.body.echo and completion.prompt_logprobs is not None:
            prompt_ids = self.prompt_ids[self.prompt_of(index)]
            records = list(completion.prompt_logprobs) + records
        return legacy_logprobs(records, self.lease.token_piece, prompt_ids, offset)

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.prompt_ids)


def _response(plan: _CompletionAnswer, completions: list[Completion]) -> CompletionResponse:
    choices = [
        CompletionChoice(
            index=index,
            text=plan.echo_text(index) + completion.text,
            logprobs=plan.logprobs(index, completion),
            finish_reason=completion.finish_reason,
            stop_reason=completion.stop_reason,
        )
        for index, completion in enumerate(completions)
    ]
    return CompletionResponse(
        id=plan.id,
        created=plan.created,
        model=plan.model,
        system_fingerprint=fingerprint(plan.lease.backend),
        choices=choices,
        usage=usage_of(completions, plan.prompt_tokens),
    )


async def _stream(
    plan: _CompletionAnswer, jobs: list[GenerationRequest]
) -> AsyncIterator[dict[str, Any]]:
    include_usage = bool(plan.body.stream_options and plan.body.stream_options.include_usage)
    started = [False] * len(jobs)
    offsets = [0] * len(jobs)
    results = [Completion() for _ in jobs]
    header = {
        "id": plan.id,
        "object": "text_completion",
        "created": plan.created,
        "model": plan.model,
        "system_fingerprint": fingerprint(plan.lease.backend),
    }
    async with contextlib.aclosing(merge_streams(plan.runner, jobs)) as merged:
        async for index, chunk in merged:
            results[index].add(chunk)
            text = chunk.text
            piece = Completion(logprobs=chunk.logprobs or [], prompt_logprobs=chunk.prompt_logprobs)
            if not started[index]:
                started[index] = True
                text = plan.echo_text(index) + text
            logprobs = plan.logprobs(index, piece, offsets[index])
            offsets[index] += len(text)
            if not text and chunk.finish_reason is None and not chunk.token_ids:
                continue
            choice = {
                "index": index,
                "text": text,
                "logprobs": logprobs.model_dump() if logprobs else None,
                "finish_reason": chunk.finish_reason,
            }
            if chunk.finish_reason is not None:
                choice["stop_reason"] = chunk.stop_reason
            yield {**header, "choices": [choice]}
    if include_usage:
        usage = usage_of(results, plan.prompt_tokens)
        yield {**header, "choices": [], "usage": usage.model_dump()}


@generation_route(router, "/v1/completions", CompletionResponse, "Create a completion")
async def create_completion(body: CompletionRequest, request: Request, response: Response) -> Any:
    state = get_state(request)
    _check_request(body, state)
    return await serve(request, response, body, lambda lease: _CompletionAnswer(body, lease, state))
