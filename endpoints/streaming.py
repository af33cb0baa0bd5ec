"""Server-sent events and client disconnects.

A streamed answer is an async iterator of JSON-able payloads. It goes out as ``data:`` events
with keep-alive comments while the engine is busy (a long prefill); an error after the stream
started is sent as one ``data: {"error": ...}`` event and the stream closes. When the client
goes away, sse-starlette cancels the iterator, whose ``finally`` cancels the engine jobs.

A client that stops reading (its socket and the server's send buffer full) blocks the sends;
after ``network.stream_send_timeout`` seconds of one blocked send the stream is closed the same
way, so such a client cannot hold a generation slot for ever.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from loguru import logger
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from common.errors import ServalError

T = TypeVar("T")
EventName = str | Callable[[Any], str] | None
"""The ``event:`` line of each SSE event: none, one for all, or one per payload (a function
of the payload, the error payload included)."""
DONE = "[DONE]"
SEP = "\n"  # lines end in LF, as OpenAI and KoboldCpp send them (Kobold Lite parses only LF)


def _dump(payload: Any) -> str:
    if isinstance(payload, BaseModel):
        return payload.model_dump_json(exclude_none=False)
    if isinstance(payload, str):
        return payload
    return json.dumps(payload, ensure_ascii=False)


def error_payload(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ServalError):
        return exc.body()
    return {
        "error": {
            "message": f"Generation failed: {type(exc).__name__}",
            "type": "server_error",
            "param": None,
            "code": "generation_failed",
        }
    }


def _named(payload: Any, event: EventName) -> ServerSentEvent:
    name = event(payload) if callable(event) else event
    return ServerSentEvent(data=_dump(payload), event=name, sep=SEP)


async def _events(
    payloads: AsyncIterator[Any], event: EventName, done: bool
) -> AsyncIterator[ServerSentEvent]:
    try:
        async for payload in payloads:
            yield _named(payload, event)
    except Exception as exc:
        if not isinstance(exc, ServalError):
            logger.opt(exception=exc).error("stream failed")
        yield _named(error_payload(exc), event)
        return
    finally:
        await payloads.aclose()  # type: ignore[attr-defined]
    if done:
        yield _named(DONE, event)


class _EventStream(EventSourceResponse):
    """An SSE response that a client which stopped reading ends with one log line."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            request_id = str(scope.get("state", {}).get("request_id", ""))
            logger.warning(
                f"{request_id[:8]} stream closed: its client read nothing for "
                f"{self.send_timeout:g} s; its generation was cancelled"
            )


def sse_response(
    payloads: AsyncIterator[Any],
    ping_interval: float,
    *,
    event: EventName = None,
    done: bool = True,
    headers: dict[str, str] | None = None,
    send_timeout: float = 0.0,
) -> EventSourceResponse:
    """Stream ``payloads`` as SSE; ``done`` adds the final ``data: [DONE]``. A send blocked for
    ``send_timeout`` seconds (0: no limit) closes the stream and the iterator."""
    return _EventStream(
        _events(payloads, event, done),
        ping=ping_interval if ping_interval > 0 else 10**9,
        sep=SEP,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
        send_timeout=send_timeout or None,
    )


class ClientDisconnected(ServalError):
    status_code = 499
    error_type = "invalid_request_error"
    default_code = "client_disconnected"


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first (non-streaming answers)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and task.cancelled():
            raise ClientDisconnected("The client disconnected; its jobs were cancelled.") from None
        raise
    finally:
        watcher.cancel()
