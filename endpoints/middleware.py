"""ASGI middleware: a request id, the body size limit, and one log line per request."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from loguru import logger
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.metrics import Metrics
from endpoints.errors import error_body


class RequestContextMiddleware:
    """Gives every request an id (``X-Request-ID``), caps its body and logs it once it ends."""

    def __init__(
        self, app: ASGIApp, max_body_size: int, body_timeout: float, metrics: Metrics
    ) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.body_timeout = body_timeout
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
        declared = self._declared_length(scope)
        if declared is not None and declared > self.max_body_size:
            response = JSONResponse(self._too_large_body(), status_code=413)
            await response(scope, receive, send)
            self._log(scope, 413, started, request_id)
            return
        received = 0
        body_done = False
        limit = self.max_body_size
        timeout = self.body_timeout

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body only a disconnect can come: wait as long as it takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                raise HTTPException(
                    408, f"The request body took over {timeout:g} s to arrive."
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"The request body is larger than {limit} bytes.")
                body_done = not message.get("more_body", False)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        finally:
            self._log(scope, status, started, request_id)

    def _declared_length(self, scope: Scope) -> int | None:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    def _too_large_body(self) -> dict:
        return error_body(
            f"The request body is larger than {self.max_body_size} bytes.",
            "invalid_request_error",
            None,
            "payload_too_large",
        )

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
