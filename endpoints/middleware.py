"""ASGI middleware: a request id and one log line per request."""

from __future__ import annotations

import time
import uuid
from typing import Any

from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.metrics import Metrics


class RequestContextMiddleware:
    """Gives every request an id (``X-Request-ID``) and logs it once it ends."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

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
