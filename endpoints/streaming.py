"""Server-sent events and client disconnects.

A streamed answer is an async iterator of JSON-able payloads. It goes out as ``data:`` events
with keep-alive comments while the engine is busy (a long prefill); an error after the stream
started is sent as one ``data: {"error": ...}`` event and the stream closes. With ``named``
(Anthropic's streams) each event carries its payload's ``type`` as ``event: <type>``, the
keep-alives are ``ping`` events, and ``errors`` words the error event. When the client
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


def _event_name(payload: Any) -> str | None:
    """A payload's ``type`` (Anthropic's event payloads all name their event there)."""
    kind = payload.get("type") if isinstance(payload, dict) else getattr(payload, "type", None)
    return kind if isinstance(kind, str) else None


async def _events(
    payloads: AsyncIterator[Any],
    event: str | None,
    done: bool,
    named: bool,
    errors: Callable[[BaseException], dict[str, Any]],
) -> AsyncIterator[ServerSentEvent]:
    try:
        async for payload in payloads:
            name = _event_name(payload) if named else event
            yield ServerSentEvent(data=_dump(payload), event=name, sep=SEP)
    except (ServalError, Exception) as exc:
        if not isinstance(exc, ServalError):
            logger.opt(exception=exc).error("stream failed")
        failure = errors(exc)
        name = _event_name(failure) if named else event
        yield ServerSentEvent(data=_dump(failure), event=name, sep=SEP)
        return
    finally:
        await payloads.aclose()  # type: ignore[attr-defined]
    if done:
        yield ServerSentEvent(data=DONE, event=event, sep=SEP)


def _ping_event() -> ServerSentEvent:
    return ServerSentEvent(data='{"type": "ping"}', event="ping", sep=SEP)


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
    event: str | None = None,
    done: bool = True,
    named: bool = False,
    errors: Callable[[BaseException], dict[str, Any]] = error_payload,
    ping_events: bool | None = None,
    headers: dict[str, str] | None = None,
    send_timeout: float = 0.0,
) -> EventSourceResponse:
    """Stream ``payloads`` as SSE; ``done`` adds the final ``data: [DONE]``; ``named``: events
    named by their payload's ``type``, ``ping`` events as keep-alives (``ping_events``: whether
    they are, when not as ``named``; else ``: ping`` comments). A send blocked for
    ``send_timeout`` seconds (0: no limit) closes the stream and the iterator."""
    pings = named if ping_events is None else ping_events
    return _EventStream(
        _events(payloads, event, done, named, errors),
        ping=ping_interval if ping_interval > 0 else 10**9,
        ping_message_factory=_ping_event if pings else None,
        sep=SEP,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
        send_timeout=send_timeout or None,
    )


class ClientDisconnected(
    ServalError, status=499, kind="invalid_request_error", code="client_disconnected"
): ...


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
