"""The errors Serval raises on purpose, each with its HTTP status and OpenAI error type.

Routes and the layers below them raise these; ``endpoints/errors.py`` turns them into the OpenAI
error body ``{"error": {"message", "type", "param", "code"}}`` in one place.
"""

from __future__ import annotations


class ServalError(Exception):
    status_code: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

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


class BadRequestError(ServalError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthError(BadRequestError):
    default_code = "context_length_exceeded"


class TemplateError(BadRequestError):
    default_code = "template_error"


class GrammarError(BadRequestError):
    default_code = "invalid_grammar"


class UnsupportedError(BadRequestError):
    default_code = "unsupported"


class AuthenticationError(ServalError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(ServalError):
    status_code = 403
    error_type = "permission_error"
    default_code = "insufficient_permissions"


class NotFoundError(ServalError):
    status_code = 404
    error_type = "not_found_error"
    default_code = "not_found"


class RequestTimeoutError(ServalError):
    status_code = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class ConflictError(ServalError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLargeError(ServalError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class TooManyRequestsError(ServalError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "server_busy"


class UnavailableError(ServalError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "model_not_loaded"


class GenerationError(ServalError):
    """The engine failed while generating; the server itself stays up."""

    status_code = 500
    error_type = "server_error"
    default_code = "generation_failed"
