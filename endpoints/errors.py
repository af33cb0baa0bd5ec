"""One place that turns every error into the error shape of the API that was called.

``{"error": {"message", "type", "param", "code"}}`` (OpenAI's) everywhere but on the Anthropic
Messages routes, which answer ``{"type": "error", "error": {"type", "message"}}``; never an HTML
page, and never a Python traceback unless ``network.send_tracebacks`` is on.
"""

from __future__ import annotations

import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import ServalError

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


ANTHROPIC_PREFIX = "/v1/messages"
_ANTHROPIC_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def is_anthropic_path(path: str) -> bool:
    return path == ANTHROPIC_PREFIX or path.startswith(f"{ANTHROPIC_PREFIX}/")


def anthropic_error(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped error body in Anthropic's shape, its type chosen by the status."""
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    return {
        "type": "error",
        "error": {
            "type": _ANTHROPIC_TYPES.get(status, fallback),
            "message": body["error"]["message"],
        },
    }


def shaped_error(path: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` (the OpenAI shape) as the API that serves ``path`` words its errors."""
    return anthropic_error(status, body) if is_anthropic_path(path) else body


def error_body(message: str, error_type: str, param: str | None = None, code: Any = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path")]
    return ".".join(parts)


def describe_validation(exc: RequestValidationError) -> tuple[int, dict]:
    """A 400 in the OpenAI shape (OpenAI's ``BadRequestError``, never FastAPI's 422).

    A body that is not JSON, or not a JSON object, names no ``param``: the position FastAPI puts
    in the location of a JSON syntax error is a character offset, not a field.
    """
    errors = exc.errors()
    first: dict[str, Any] = (
        dict(errors[0]) if errors else {"loc": (), "msg": "invalid request", "type": ""}
    )
    kind = first.get("type")
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error") or first["msg"]
        offset = first["loc"][-1] if first["loc"] and isinstance(first["loc"][-1], int) else None
        where = f" at character {offset}" if offset is not None else ""
        return 400, error_body(
            f"The body is not valid JSON: {detail}{where}.",
            "invalid_request_error",
            None,
            "invalid_json",
        )
    if kind in ("model_attributes_type", "missing") and _location(first["loc"]) == "":
        return 400, error_body(
            "The body must be a JSON object.", "invalid_request_error", None, "invalid_json"
        )
    where = _location(first["loc"])
    message = f"{where}: {first['msg']}" if where else first["msg"]
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return 400, error_body(message, "invalid_request_error", where or None, "invalid_value")


def install_error_handlers(app: FastAPI, send_tracebacks: bool) -> None:
    @app.exception_handler(ServalError)
    async def _serval_error(request: Request, exc: ServalError) -> JSONResponse:
        body = shaped_error(request.url.path, exc.status_code, exc.body())
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, body = describe_validation(exc)
        return JSONResponse(shaped_error(request.url.path, status, body), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"No route {request.method} {request.url.path}"
        error_type = _STATUS_TYPES.get(exc.status_code, "server_error")
        body = error_body(message, error_type, None, None)
        return JSONResponse(
            shaped_error(request.url.path, exc.status_code, body),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.opt(exception=exc).error(f"unhandled error on {request.method} {request.url.path}")
        body = error_body("Internal server error", "server_error", None, "internal_error")
        if send_tracebacks:
            body["error"]["trace"] = "".join(traceback.format_exception(exc))
        return JSONResponse(shaped_error(request.url.path, 500, body), status_code=500)
