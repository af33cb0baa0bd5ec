"""Request bodies, bounded before any route sees them.

For a request that carries a body this middleware, in order: refuses it with 401 when
authentication is on and the request holds no valid key (the body is never read); reads the
body within ``network.max_body_size`` bytes and ``network.body_timeout`` seconds in all (not per
chunk, so a sender trickling a byte at a time is cut off); and, for JSON, parses it in a worker
thread and refuses one nested deeper, or holding more values or objects, than ``limits`` allow.
Only then does the route get the body, so request-model validation, which holds the GIL and
would stall the event loop on a huge body even in a thread, only ever sees bounded input.
A response sent before the body was read whole closes the connection.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.auth import Authenticator
from common.config import LimitsConfig
from common.errors import (
    BadRequestError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServalError,
)
from endpoints.errors import shaped_error


@dataclass(frozen=True)
class BodyLimits:
    max_size: int
    timeout: float
    max_depth: int
    max_values: int
    max_objects: int

    @classmethod
    def of(cls, max_size: int, timeout: float, limits: LimitsConfig) -> BodyLimits:
        return cls(
            max_size,
            timeout,
            limits.max_json_depth,
            limits.max_json_values,
            limits.max_json_objects,
        )


def has_body(headers: Headers) -> bool:
    """Whether the request says a body follows (HTTP/1.1: a length above 0, or chunks)."""
    if "transfer-encoding" in headers:
        return True
    try:
        return int(headers.get("content-length", "0")) > 0
    except ValueError:
        return True  # h11 refuses a bad length before this; count it as a body to be safe


def is_json(headers: Headers) -> bool:
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


async def read_body(receive: Receive, limits: BodyLimits) -> bytes:
    """The whole body, or 413 past ``max_size`` bytes, or 408 past ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.timeout
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise RequestTimeoutError(
                f"The request body did not arrive within {limits.timeout:g} s "
                "(network.body_timeout)."
            ) from None
        if message["type"] != "http.request":  # the client went away
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limits.max_size:
            raise _too_large(limits.max_size)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def check_json_shape(body: bytes, limits: BodyLimits) -> None:
    """Refuse a JSON body nested too deep or too big to validate quickly (run off the loop).

    A body that is not JSON at all passes: the route reports that in its own words.
    """
    try:
        data = json.loads(body)
    except RecursionError:
        raise _too_deep(limits.max_depth) from None
    except ValueError:  # not JSON or not UTF-8: the route's parser says what is wrong
        return
    values = objects = 0
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        item, depth = pending.pop()
        values += 1
        if values > limits.max_values:
            raise BadRequestError(
                f"The request body holds more than {limits.max_values} JSON values "
                "(limits.max_json_values).",
                code="body_too_complex",
            )
        if isinstance(item, dict | list):
            if depth > limits.max_depth:
                raise _too_deep(limits.max_depth)
            if isinstance(item, dict):
                objects += 1
                if objects > limits.max_objects:
                    raise BadRequestError(
                        f"The request body holds more than {limits.max_objects} JSON objects "
                        "(limits.max_json_objects).",
                        code="body_too_complex",
                    )
                item = item.values()
            pending.extend((child, depth + 1) for child in item)


class _Disconnected(Exception):
    """The client closed the connection while sending its body."""


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The request body is larger than {limit} bytes.")


def _too_deep(limit: int) -> BadRequestError:
    return BadRequestError(
        f"The request body is nested deeper than {limit} levels (limits.max_json_depth).",
        code="body_too_deep",
    )


class RequestBodyMiddleware:
    """Authenticates, reads and bounds every request body before the app sees it."""

    def __init__(self, app: ASGIApp, auth: Authenticator, limits: BodyLimits) -> None:
        self.app = app
        self.auth = auth
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not has_body(headers):
            await self.app(scope, receive, send)
            return
        try:
            if not self.auth.disabled:
                self.auth.level(headers)  # 401 before a byte of the body is read
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.limits.max_size:
                raise _too_large(self.limits.max_size)
            body = await read_body(receive, self.limits)
        except ServalError as exc:  # the rest of the body may still be coming: do not wait
            await _refuse(exc, scope, receive, send, close=True)
            return
        except _Disconnected:  # nobody reads this answer: it only makes the log line say 400
            gone = BadRequestError("The client closed the connection while sending the body.")
            await _refuse(gone, scope, receive, send, close=True)
            return
        if is_json(headers):
            try:
                await asyncio.to_thread(check_json_shape, body, self.limits)
            except ServalError as exc:
                await _refuse(exc, scope, receive, send, close=False)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body only a disconnect can come
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(
    exc: ServalError, scope: Scope, receive: Receive, send: Send, close: bool
) -> None:
    headers = {**exc.headers, "connection": "close"} if close else exc.headers
    body = shaped_error(scope["path"], exc.status_code, exc.body())
    response = JSONResponse(body, status_code=exc.status_code, headers=headers)
    await response(scope, receive, send)
