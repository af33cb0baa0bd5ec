"""The last step of a generation route: stream the jobs as SSE, or collect them into one answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request, Response

from backends.base import GenerationRequest
from common.generation import Completion, JobRunner, collect_all, unsupported_report
from common.model import Lease
from endpoints.state import ServerState
from endpoints.streaming import cancel_on_disconnect, sse_response


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
) -> Any:
    """Run ``jobs`` and answer. The lease is released when the answer (or stream) is done;
    ``streamed`` must release it itself, in its ``finally``."""
    request.state.lease = lease  # the request's log line reports the tokens it made
    headers = unsupported_report(lease, jobs[0].params, request.state.request_id)
    if stream and not state.config.developer.disable_request_streaming:
        network = state.config.network
        return sse_response(
            streamed(),
            network.sse_ping_interval,
            headers=headers,
            send_timeout=network.stream_send_timeout,
        )
    response.headers.update(headers)
    try:
        completions = await cancel_on_disconnect(request, collect_all(runner or lease, jobs))
    finally:
        lease.release()
    return answered(completions)
