"""The KoboldAI / KoboldCpp API under ``/api``: generation, genkeys, tokens and server info.

The ``/api/v1/...`` routes are KoboldAI United's (also served as ``/api/latest/...``), the
``/api/extra/...`` ones KoboldCpp's. As in KoboldCpp, the info routes answer without a key (Kobold
Lite reads ``protected`` from /api/extra/version to know it must ask for one; without a valid key
/api/v1/model names no model); generation, tokens, genkeys and soft prompt changes need an api
key. Routes that use the model answer 503 while none is loaded. See docs/kobold.md.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from loguru import logger
from sse_starlette import EventSourceResponse

from common.errors import AuthenticationError, ServalError, UnsupportedError
from common.generation import Completion
from common.images import refuse_images
from common.jobs import log_jobs
from common.model import Lease
from common.tokenizing import encode_text
from endpoints.dependencies import REQUIRE_API, caller_key, get_state, require_api, share_owner
from endpoints.Kobold.jobs import JobRegistry, KoboldJob, owner_of
from endpoints.Kobold.plan import KoboldPlan
from endpoints.Kobold.types.common import (
    PerfResponse,
    ResultResponse,
    SoftPrompt,
    SoftPromptChoice,
    SoftPromptList,
    TokenCountRequest,
    TokenCountResponse,
    ValueResponse,
    VersionResponse,
)
from endpoints.Kobold.types.generation import (
    DEFAULT_MAX_LENGTH,
    AbortResponse,
    GenerateRequest,
    GenerateResponse,
    GenerationResult,
    GenkeyRequest,
    LogprobsResponse,
    StreamEvent,
)
from endpoints.OAI.shapes import chat_logprobs
from endpoints.OAI.types.chat import ChatChoiceLogprobs
from endpoints.state import ServerState
from endpoints.streaming import cancel_on_disconnect, error_payload, sse_response

KOBOLD_AI_VERSION = "1.2.5"  # KoboldAI United API level: clients send stop sequences from 1.2.2
KOBOLDCPP_VERSION = "1.74"  # the KoboldCpp features Kobold Lite may use (SSE, genkeys, DRY, XTC)

united = APIRouter(tags=["Kobold"])
extra = APIRouter(tags=["Kobold"])
OPEN_PATHS = frozenset(
    {
        *(
            f"/api/{level}/{route}"
            for level in ("v1", "latest")
            for route in (
                "model",
                "info/version",
                "config/max_length",
                "config/max_context_length",
                "config/soft_prompts_list",
                "config/soft_prompt",
            )
        ),
        "/api/extra/version",
        "/api/extra/true_max_context_length",
        "/api/extra/perf",
        "/api/extra/preloadstory",
    }
)
"""Kobold routes that answer without a key, as KoboldCpp's (GET only)."""
PROTECTED_MODEL = "serval/protected-model"  # KoboldCpp's answer to a caller without the key


def mount(app: FastAPI) -> None:
    """Serve the Kobold API on ``app``: ``/api/v1``, its ``/api/latest`` alias, ``/api/extra``."""
    app.state.kobold_jobs = JobRegistry()
    app.include_router(united, prefix="/api/v1")
    app.include_router(united, prefix="/api/latest", include_in_schema=False)
    app.include_router(extra, prefix="/api/extra")


def _jobs(request: Request) -> JobRegistry:
    return request.app.state.kobold_jobs


def _owner(request: Request) -> str:
    return owner_of(caller_key(request))


async def _start(
    body: GenerateRequest, request: Request, stream: bool
) -> tuple[KoboldJob, KoboldPlan]:
    """Plan the request and start its job; the job holds the model until it ends."""
    refuse_images(body.images, "Kobold generation")
    state: ServerState = get_state(request)
    request_id: str = request.state.request_id
    lease: Lease = await state.container.acquire(share_owner(request))
    try:
        plan = KoboldPlan(body, lease, state, stream)
        jobs = await plan.jobs(request_id)
        genkey = body.genkey or request_id
        await log_jobs(jobs, lease, state.config.logging, request_id)
        job = _jobs(request).open(_owner(request), genkey, body.n, stream, body.logprobs)
    except BaseException:
        lease.release()
        raise
    job.start(plan.chunks(jobs), on_end=lease.release)
    request.state.log_extra = f"prompt={len(plan.prompt_ids)}"
    request.state.lease = lease  # the request's log line reports the tokens it made
    return job, plan


def _logprobs(completion: Completion) -> ChatChoiceLogprobs:
    return ChatChoiceLogprobs(content=chat_logprobs(completion.logprobs), refusal=None)


def _result(
    completion: Completion, prompt_tokens: int, aborted: bool, logprobs: bool
) -> GenerationResult:
    """A finished text (counted as the OpenAI usage counts it), or an aborted one so far."""
    reason = completion.finish_reason or ("abort" if aborted else None)
    stats = completion.stats
    return GenerationResult(
        text=completion.text,
        finish_reason=reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=stats.completion_tokens if stats else len(completion.token_ids),
        logprobs=_logprobs(completion) if logprobs else None,
    )


@united.post(  # the Horde worker posts to /api/latest/generate/
    "/generate/",
    response_model=GenerateResponse,
    response_model_exclude_none=True,
    include_in_schema=False,
    dependencies=REQUIRE_API,
)
@united.post(
    "/generate",
    response_model=GenerateResponse,
    response_model_exclude_none=True,
    summary="Generate text (blocking)",
    dependencies=REQUIRE_API,
)
async def generate(body: GenerateRequest, request: Request, response: Response) -> Any:
    """The whole text at once; another request can read it so far (``/api/extra/generate/check``)
    or stop it (``/api/extra/abort``) by its ``genkey``. An aborted text is returned as it was."""
    job, plan = await _start(body, request, stream=False)
    response.headers.update(plan.unsupported(request.state.request_id))
    try:
        await cancel_on_disconnect(request, job.wait())
    finally:
        job.cancel()
    if job.error is not None:
        raise job.error
    results = [
        _result(c, len(plan.prompt_ids), job.aborted, body.logprobs) for c in job.completions
    ]
    return GenerateResponse(results=results)


async def _stream_events(job: KoboldJob) -> AsyncIterator[dict[str, Any]]:
    try:
        async for _, chunk in job.updates():
            if chunk.text or chunk.finish_reason is not None:
                yield StreamEvent(token=chunk.text, finish_reason=chunk.finish_reason).model_dump()
        if job.error is not None:
            if not isinstance(job.error, ServalError):
                logger.opt(exception=job.error).error("Kobold stream failed")
            yield {"token": "", "finish_reason": "error", **error_payload(job.error)}
        elif job.aborted:
            yield StreamEvent(token="", finish_reason="abort").model_dump()
    finally:
        job.cancel()


@extra.post(
    "/generate/stream",
    summary="Generate text as server-sent events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
    dependencies=REQUIRE_API,
)
async def generate_stream(body: GenerateRequest, request: Request) -> Any:
    """``event: message`` events with ``data: {"token": ..., "finish_reason": ...}``; the last one
    has a finish_reason. An error after the stream started comes as one event with ``"token": ""``,
    ``"finish_reason": "error"`` and the OpenAI ``error`` object."""
    state = get_state(request)
    job, plan = await _start(body, request, stream=True)
    return sse_response(
        _stream_events(job),
        state.config.network.sse_ping_interval,
        event="message",
        done=False,
        headers=plan.unsupported(request.state.request_id),
        send_timeout=state.config.network.stream_send_timeout,
    )


def _check(request: Request, genkey: str | None) -> GenerateResponse:
    jobs = _jobs(request).find(_owner(request), genkey)
    if not jobs:
        return GenerateResponse(results=[GenerationResult(text="")])
    job = jobs[-1]
    return GenerateResponse(results=[GenerationResult(text=c.text) for c in job.completions])


# One KoboldCpp route in two forms: GET with ``?genkey=``, POST with ``{"genkey": ...}``.
_CHECK: dict[str, Any] = {
    "summary": "Text so far",
    "response_model_exclude_none": True,
    "dependencies": REQUIRE_API,
}


@extra.get("/generate/check", **_CHECK)
async def check_get(request: Request, genkey: str | None = None) -> GenerateResponse:
    """The text so far of the caller's generation ``genkey`` (default: the latest one); empty
    when there is none, or when it belongs to another key."""
    return _check(request, genkey)


@extra.post("/generate/check", **_CHECK)
async def check_post(request: Request, body: GenkeyRequest | None = None) -> GenerateResponse:
    """As the GET form, with ``{"genkey": ...}`` in the body."""
    return _check(request, body.genkey if body else None)


@extra.post("/last_logprobs", summary="Logprobs of a generation", dependencies=REQUIRE_API)
async def last_logprobs(request: Request, body: GenkeyRequest | None = None) -> LogprobsResponse:
    """The logprobs of the caller's generation ``genkey`` (default: the latest), as KoboldCpp;
    null when it did not ask for them (``"logprobs": true``) or is not the caller's."""
    jobs = _jobs(request).find(_owner(request), body.genkey if body else None)
    if not jobs or not jobs[-1].logprobs:
        return LogprobsResponse(logprobs=None)
    return LogprobsResponse(logprobs=_logprobs(jobs[-1].completions[0]))


@extra.post("/abort", summary="Stop a generation", dependencies=REQUIRE_API)
async def abort(request: Request, body: GenkeyRequest | None = None) -> AbortResponse:
    """Stop the caller's generation ``genkey`` (default: all the caller's running ones) and its
    engine job. ``success`` says whether one was running; another key's genkey is never found."""
    jobs = _jobs(request).find(_owner(request), body.genkey if body else None)
    stopped = [job for job in jobs if await job.abort()]
    return AbortResponse(success=bool(stopped), done=True)


@extra.post("/tokencount", summary="Count tokens", dependencies=REQUIRE_API)
async def token_count(body: TokenCountRequest, request: Request) -> TokenCountResponse:
    state = get_state(request)
    async with state.container.use() as lease:
        ids = await encode_text(
            lease,
            body.prompt,
            state.config.limits,
            add_bos=None if body.special else False,
            what="text",
        )
    return TokenCountResponse(value=len(ids), ids=ids)


def _has_key(request: Request) -> bool:
    try:
        require_api(request)
    except AuthenticationError:
        return False
    return True


@united.get("/model", summary="The loaded model")
async def model_name(request: Request) -> ResultResponse:
    """``serval/<name>``; ``serval/protected-model`` for a caller without a valid key, as
    KoboldCpp answers (clients connect first, then ask for the key)."""
    async with get_state(request).container.use() as lease:
        name = f"serval/{lease.name}" if _has_key(request) else PROTECTED_MODEL
        return ResultResponse(result=name)


@united.get("/config/max_length", summary="Default generation length")
async def max_length(request: Request) -> ValueResponse:
    """Tokens generated when a request has no ``max_length`` (a sampler preset may set it)."""
    entry = get_state(request).overrides.preset.entries.get("max_tokens")
    value = entry.override if entry is not None and entry.override else DEFAULT_MAX_LENGTH
    return ValueResponse(value=value)


@united.get("/config/max_context_length", summary="The model's context length")
@extra.get("/true_max_context_length", summary="The model's context length")
async def _context_length(request: Request) -> ValueResponse:
    async with get_state(request).container.use() as lease:
        return ValueResponse(value=lease.context_length)


@united.get("/info/version", summary="KoboldAI API version")
async def api_version() -> ResultResponse:
    return ResultResponse(result=KOBOLD_AI_VERSION)


@extra.get("/version", summary="KoboldCpp compatibility level")
async def koboldcpp_version(request: Request) -> VersionResponse:
    return VersionResponse(
        version=KOBOLDCPP_VERSION, protected=not get_state(request).auth.disabled
    )


@united.get("/config/soft_prompts_list", summary="Soft prompts")
async def soft_prompts() -> SoftPromptList:
    """Always empty: soft prompts are not supported."""
    return SoftPromptList()


@united.get("/config/soft_prompt", summary="Current soft prompt")
async def soft_prompt() -> SoftPrompt:
    return SoftPrompt()


@united.put("/config/soft_prompt/", include_in_schema=False, dependencies=REQUIRE_API)
@united.put(
    "/config/soft_prompt", summary="Set the soft prompt (only none)", dependencies=REQUIRE_API
)
async def set_soft_prompt(body: SoftPromptChoice) -> dict:
    """Clearing the soft prompt (``""`` or null, as the Horde worker sends) succeeds; naming one
    is a 400: none can be loaded."""
    if body.value:
        raise UnsupportedError("Soft prompts are not supported.", param="value")
    return {}


def _stop_code(finish_reason: str | None, stop_reason: str | int | None) -> int:
    """KoboldCpp's stop_reason: 0 token limit, 1 end-of-sequence (a stop token), 2 stop string."""
    if finish_reason == "length":
        return 0
    return 2 if isinstance(stop_reason, str) else 1


@extra.get("/perf", summary="Server status (KoboldCpp)")
async def perf(request: Request) -> PerfResponse:
    """The last generation's timings and the engine's load; Kobold Lite shows it as the server
    status. No key is needed, as in KoboldCpp; it names no text."""
    state = get_state(request)
    container = state.container
    last = state.metrics.last_job
    now = time.time()
    report = PerfResponse(
        total_gens=state.metrics.finished_jobs,
        queue=container.queued_jobs,
        idle=0 if container.active_jobs else 1,
        uptime=now - state.started_at,
        idletime=now - (last.ended_at if last else state.started_at),
    )
    if last is None:
        return report
    return report.model_copy(
        update={
            "last_process": last.stats.prefill_time,
            "last_eval": last.stats.generate_time,
            "last_token_count": last.stats.completion_tokens,
            "last_seed": -1 if last.seed is None else last.seed,
            "stop_reason": _stop_code(last.finish_reason, last.stop_reason),
        }
    )


@extra.get("/preloadstory", summary="Story to open on connect (KoboldCpp)")
async def preloadstory() -> dict:
    """Always ``{}``: Serval has no story to preload (KoboldCpp's ``--preloadstory``)."""
    return {}
