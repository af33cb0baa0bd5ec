"""From an API request to engine jobs: the one path every generation API takes.

An API translates its body into these steps and adds only what is its own (completions: the
prompt list and echo; chat: template, tools and reasoning; Kobold: memory and the left cut):

1. :func:`sampling`: the body's sampler fields with the active preset applied, checked against
   the config limits and the model's vocabulary;
2. :func:`prompt_ids`: a text tokenized off the event loop once it is known to fit (or ids as
   sent), never empty, every id in the vocabulary;
3. :func:`request_grammar`: the structured-output constraint, compiled within its bounds;
4. :func:`jobs_for`: ``n`` jobs per prompt, with their own seeds, stops and clamped lengths
   (and, with CFG, the negative prompt's ids: :func:`guided`);
5. :func:`log_jobs`: what ``logging.log_prompt`` and ``logging.log_generation_params`` ask for.

Everything here runs before a response starts, so bad input is a 4xx, never a broken stream.
"""

from __future__ import annotations

import asyncio
from dataclasses import fields, replace
from typing import Any

from loguru import logger

from backends.base import GenerationRequest, GrammarSpec, ModelView
from backends.sampling import SamplingParams
from common.config import LimitsConfig, LoggingConfig
from common.generation import (
    PLAIN_JOB,
    JobOptions,
    build_request,
    check_limits,
    check_prompt_ids,
    seeded,
)
from common.grammar import GrammarBounds, build_grammar, compile_grammar
from common.sampling import OverridePreset, SamplerRequest, resolve
from common.tokenizing import encode_text


def sampling(
    body: SamplerRequest, preset: OverridePreset, model: ModelView, limits: LimitsConfig
) -> SamplingParams:
    """The request's sampler settings after ``preset``, within the limits and the vocabulary."""
    params = resolve(body, preset)
    check_limits(params, model, limits)
    return params


async def prompt_ids(
    model: ModelView,
    prompt: str | list[int],
    limits: LimitsConfig,
    *,
    add_bos: bool | None,
    param: str = "prompt",
    what: str = "prompt",
) -> list[int]:
    """The ids of one prompt: a text is tokenized in a worker thread, ids are taken as sent."""
    if isinstance(prompt, str):
        ids = await encode_text(model, prompt, limits, add_bos=add_bos, param=param, what=what)
    else:
        ids = list(prompt)
    check_prompt_ids(ids, model, param=param)
    return ids


async def request_grammar(
    params: SamplingParams, limits: LimitsConfig, json_schema: dict[str, Any] | None = None
) -> GrammarSpec | None:
    """The grammar of ``json_schema`` (an API's own response format, which wins) or of the
    sampler fields ``json_schema``, ``regex_pattern`` and ``grammar_string``; None without one."""
    bounds = GrammarBounds.from_limits(limits)
    return await compile_grammar(
        build_grammar,
        json_schema or params.json_schema,
        params.regex_pattern,
        params.grammar_string,
        bounds,
        bounds=bounds,
    )


async def guided(model: ModelView, params: SamplingParams, limits: LimitsConfig) -> SamplingParams:
    """``params`` with the negative prompt's ids when CFG is on: its text as sent, tokenized
    like a prompt (with BOS as ``add_bos_token`` says, never templated), or, absent or empty,
    the BOS token alone (TabbyAPI's default; EOS for a model without one)."""
    if not params.cfg:
        return params
    if params.negative_prompt:
        ids = await prompt_ids(
            model,
            params.negative_prompt,
            limits,
            add_bos=params.add_bos_token,
            param="negative_prompt",
            what="negative prompt",
        )
    else:
        special = model.special_tokens
        start = special.bos_id if special.bos_id is not None else special.eos_ids[0]
        ids = [start]
    return replace(params, negative_prompt_ids=tuple(ids))


async def jobs_for(
    model: ModelView,
    request_id: str,
    prompts: list[list[int]],
    n: int,
    params: SamplingParams,
    limits: LimitsConfig,
    options: JobOptions = PLAIN_JOB,
) -> list[GenerationRequest]:
    """``n`` jobs for each prompt, in that order (job ``i`` answers prompt ``i // n``); choice
    ``c`` of a seeded request gets seed + ``c``. With CFG every job carries the negative
    prompt's ids (:func:`guided`)."""
    params = await guided(model, params, limits)
    return [
        build_request(
            model,
            f"{request_id}-{prompt_index * n + choice}",
            ids,
            seeded(params, choice),
            limits,
            options,
        )
        for prompt_index, ids in enumerate(prompts)
        for choice in range(n)
    ]


PROMPT_PARAMS = frozenset({"negative_prompt", "negative_prompt_ids"})
"""Prompt text among the settings: logged with the prompts (``log_prompt``), not the settings."""


def _set_params(params: SamplingParams) -> str:
    """The sampler settings of ``params`` that differ from the neutral ones."""
    changed = [
        f"{f.name}={getattr(params, f.name)!r}"
        for f in fields(params)
        if getattr(params, f.name) != f.default and f.name not in PROMPT_PARAMS
    ]
    return " ".join(changed) or "(defaults)"


async def log_jobs(
    jobs: list[GenerationRequest], model: ModelView, config: LoggingConfig, request_id: str
) -> None:
    """Log each distinct prompt as the model reads it, special tokens included
    (``log_prompt``), and the jobs' settings (``log_generation_params``)."""
    tag = request_id[:8]
    if config.log_prompt:
        prompts: list[list[int]] = []
        for job in jobs:
            if job.prompt_ids not in prompts:
                prompts.append(job.prompt_ids)
        for index, ids in enumerate(prompts):
            text = await asyncio.to_thread(model.decode, ids, True)
            logger.info(f"{tag} prompt {index} ({len(ids)} tokens): {text!r}")
        negative = list(jobs[0].params.negative_prompt_ids) if jobs else []
        if negative:
            text = await asyncio.to_thread(model.decode, negative, True)
            logger.info(f"{tag} negative prompt ({len(negative)} tokens): {text!r}")
    if config.log_generation_params and jobs:
        first = jobs[0]
        logger.info(
            f"{tag} generation params: jobs={len(jobs)} max_new_tokens={first.max_new_tokens} "
            f"grammar={first.grammar.description if first.grammar else None} "
            f"{_set_params(first.params)}"
        )
