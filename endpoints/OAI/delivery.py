"""The last step of a generation route: hold the model, plan the jobs, then stream them as SSE
or collect them into one answer, and give the model back however that ends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import APIRouter, Request, Response
from fastapi.types import DecoratedCallable
from pydantic import BaseModel

from backends.base import GenerationRequest
from common.generation import Completion, JobRunner, collect_all, unsupported_report
from common.jobs import log_jobs
from common.model import Lease
from endpoints.dependencies import get_state
from endpoints.OAI.inline import lease_for
from endpoints.state import ServerState
from endpoints.streaming import cancel_on_disconnect, error_payload, sse_response


@dataclass(frozen=True)
class StreamStyle:
    """How an API's stream looks (see :func:`~endpoints.streaming.sse_response`): OpenAI's
    chat and completions by default; the Messages and Responses APIs name their events."""

    done: bool = True
    named: bool = False
    errors: Callable[[BaseException], dict[str, Any]] = field(default=error_payload)
    ping_events: bool | None = None


OPENAI_STREAM = StreamStyle()


def generation_route(
    router: APIRouter, path: str, answer: type[BaseModel], summary: str
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """``POST path`` of a generation API: ``answer`` as one body, or with ``stream`` an SSE
    stream (the other content of its 200 in OpenAPI)."""
    return router.post(
        path,
        response_model=answer,
        summary=summary,
        responses={200: {"content": {"text/event-stream": {}}}},
    )


class Answer(Protocol):
    """One request's answer being made: its jobs, what runs them, the two forms of it, and
    how its stream looks."""

    @property
    def style(self) -> StreamStyle: ...

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def runner(self) -> JobRunner:
        """What runs the jobs (the lease, or a wrapper of it); read once the jobs are planned."""
        ...

    async def jobs(self, request_id: str) -> list[GenerationRequest]: ...

    def streamed(self, jobs: list[GenerationRequest]) -> AsyncIterator[Any]: ...

    def answered(self, completions: list[Completion]) -> Any: ...


class GenerationBody(Protocol):
    """What delivery reads of a request body: the model it names, and whether it streams."""

    @property
    def model(self) -> str | None: ...

    @property
    def stream(self) -> bool: ...


async def serve(
    request: Request,
    response: Response,
    body: GenerationBody,
    answer_for: Callable[[Lease], Answer],
) -> Any:
    """A generation route's whole body after its own checks: a lease on the model ``body``
    names, the answer planned on it, then :func:`deliver`. The lease is given back on every
    path: a planning error, the end of the answer, a client that left."""
    state = get_state(request)
    lease = await lease_for(body.model, request, state)
    try:
        answer = answer_for(lease)
        jobs = await answer.jobs(request.state.request_id)
    except BaseException:
        lease.release()
        raise
    request.state.log_extra = f"prompt={answer.prompt_tokens}"
    return await deliver(
        request,
        response,
        state,
        lease,
        jobs,
        stream=body.stream,
        streamed=lambda: answer.streamed(jobs),
        answered=answer.answered,
        runner=answer.runner,
        style=answer.style,
    )


async def _releasing(events: AsyncIterator[Any], lease: Lease) -> AsyncIterator[Any]:
    """``events``, then the lease given back (also when the client leaves mid-stream)."""
    try:
        async for event in events:
            yield event
    finally:
        close = getattr(events, "aclose", None)  # its own finally cancels the jobs first
        try:
            if close is not None:
                await close()
        finally:
            lease.release()


async def deliver(
    request: Request,
    response: Response,
    state: ServerState,
    lease: Lease,
    jobs: list[GenerationRequest],
    *,
    stream: bool,
    streamed: Callable[[], AsyncIterator[Any]],
    answered: Callable[[list[Completion]], Any],
    runner: JobRunner | None = None,
    style: StreamStyle = OPENAI_STREAM,
) -> Any:
    """Run ``jobs`` and answer; the lease is released when the answer (or stream) is done."""
    request.state.lease = lease  # the request's log line reports the tokens it made
    await log_jobs(jobs, lease, state.config.logging, request.state.request_id)
    headers = unsupported_report(lease, jobs[0].params, request.state.request_id)
    if stream and not state.config.developer.disable_request_streaming:
        network = state.config.network
        return sse_response(
            _releasing(streamed(), lease),
            network.sse_ping_interval,
            done=style.done,
            named=style.named,
            errors=style.errors,
            ping_events=style.ping_events,
            headers=headers,
            send_timeout=network.stream_send_timeout,
        )
    response.headers.update(headers)
    try:
        completions = await cancel_on_disconnect(request, collect_all(runner or lease, jobs))
    finally:
        lease.release()
    return answered(completions)
