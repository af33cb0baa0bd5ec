"""The errors Serval raises on purpose, each with its HTTP status and OpenAI error type.

Routes and the layers below them raise these; ``endpoints/errors.py`` turns them into the OpenAI
error body ``{"error": {"message", "type", "param", "code"}}`` in one place.
"""

from __future__ import annotations


class ServalError(Exception):
    """An error with its HTTP status, its OpenAI error ``type`` and its default ``code``.

    A subclass declares what differs from its parent as class keywords:
    ``class NotFoundError(ServalError, status=404, kind="not_found_error", code="not_found")``.
    """

    status_code: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

    def __init_subclass__(
        cls,
        *,
        status: int | None = None,
        kind: str | None = None,
        code: str | None = None,
        **kwargs: object,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status_code = status
        if kind is not None:
            cls.error_type = kind
        if code is not None:
            cls.default_code = code

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


_INVALID = "invalid_request_error"


class BadRequestError(ServalError, status=400, kind=_INVALID): ...


class ContextLengthError(BadRequestError, code="context_length_exceeded"): ...


class TemplateError(BadRequestError, code="template_error"): ...


class GrammarError(BadRequestError, code="invalid_grammar"): ...


class UnsupportedError(BadRequestError, code="unsupported"): ...


class AuthenticationError(
    ServalError, status=401, kind="authentication_error", code="invalid_api_key"
): ...


class PermissionDeniedError(
    ServalError, status=403, kind="permission_error", code="insufficient_permissions"
): ...


class NotFoundError(ServalError, status=404, kind="not_found_error", code="not_found"): ...


class RequestTimeoutError(ServalError, status=408, kind=_INVALID, code="request_timeout"): ...


class ConflictError(ServalError, status=409, kind=_INVALID, code="conflict"): ...


class PayloadTooLargeError(ServalError, status=413, kind=_INVALID, code="payload_too_large"): ...


class TooManyRequestsError(
    ServalError, status=429, kind="rate_limit_error", code="server_busy"
): ...


class UnavailableError(
    ServalError, status=503, kind="service_unavailable", code="model_not_loaded"
): ...


class GenerationError(ServalError, code="generation_failed"):
    """The engine failed while generating; the server itself stays up."""
