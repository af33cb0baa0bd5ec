"""ASGI middleware: a request id and one log line per request (and, with
``logging.log_requests``, the request itself: method, URL, headers but the keys, and body)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.auth import KEY_HEADERS
from common.metrics import Metrics

LOGGED_BODY_BYTES = 16 << 10  # the most of a request body that log_requests writes
HIDDEN_HEADERS = frozenset({*KEY_HEADERS, "cookie", "proxy-authorization"})


class RequestContextMiddleware:
    """Gives every request an id (``X-Request-ID``) and logs it once it ends."""

    def __init__(self, app: ASGIApp, metrics: Metrics, log_requests: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        if self.log_requests:
            receive = _logging_receive(scope, receive, request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._log(scope, status, started, request_id)

    def _log(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        seconds = time.perf_counter() - started
        route = scope.get("route")
        self.metrics.request_done(getattr(route, "path", "unmatched"), status, seconds)
        elapsed = seconds * 1000
        state = scope.get("state", {})
        extra = state.get("log_extra", "")
        lease = state.get("lease")  # a generation: how many tokens it made
        if lease is not None:
            extra += f" completion={lease.completion_tokens}"
        line = f"{request_id[:8]} {scope['method']} {scope['path']} {status} {elapsed:.0f} ms"
        if extra:
            line += f" {extra}"
        probe = scope["path"] in ("/health", "/metrics")
        if status == 503:  # unavailable (no model, one loading): a state, not a fault
            logger.log("INFO" if probe else "WARNING", line)
        elif status >= 500:
            logger.error(line)
        elif probe:
            logger.debug(line)
        else:
            logger.info(line)


def _request_head(scope: Scope, request_id: str) -> str:
    """The request line and headers, a key header's value replaced by ``<hidden>``."""
    query = scope.get("query_string", b"").decode("latin-1")
    url = scope["path"] + (f"?{query}" if query else "")
    headers = []
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        value = "<hidden>" if name in HIDDEN_HEADERS else raw_value.decode("latin-1")
        headers.append(f"{name}: {value}")
    return f"{request_id[:8]} request {scope['method']} {url} headers: {'; '.join(headers)}"


def _logging_receive(scope: Scope, receive: Receive, request_id: str) -> Receive:
    """``receive`` that logs the request once its body has been read (the first
    :data:`LOGGED_BODY_BYTES` of it); a request without a body is logged at its first read."""
    body = bytearray()
    logged = False

    async def wrapped() -> Message:
        nonlocal logged
        message = await receive()
        if logged:
            return message
        if message["type"] == "http.request":
            room = LOGGED_BODY_BYTES - len(body)
            if room > 0:
                body.extend(message.get("body", b"")[:room])
            if message.get("more_body", False):
                return message
        logged = True
        text = body.decode("utf-8", errors="replace")
        logger.info(f"{_request_head(scope, request_id)} body: {text}")
        return message

    return wrapped
