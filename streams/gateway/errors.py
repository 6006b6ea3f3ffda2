"""What the gateway answers when it does not answer with a completion, in
OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`.

    ApiError                 any refusal or failure the caller sees (status, shape, headers)
    └── (raised directly; the constructors below name each case)

`x-should-retry: false` is set where the pipeline already did the retrying
(unavailable, deadline): the OpenAI SDKs obey it instead of retrying 5xx.
"""

from __future__ import annotations

from typing import Any

from schemas.errors import FallbackError


class ApiError(FallbackError):
    """An HTTP error in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        error.update(self.extra)
        return {"error": error}


def invalid_request(
    message: str, param: str | None = None, code: str = "invalid_request"
) -> ApiError:
    return ApiError(400, message, type="invalid_request_error", code=code, param=param)


def unsupported_parameter(param: str) -> ApiError:
    return invalid_request(
        f"Unsupported parameter: '{param}' is not supported by this gateway.",
        param=param,
        code="unsupported_parameter",
    )


def invalid_api_key() -> ApiError:
    # Never echo the presented key: the message is the same for every bad key.
    return ApiError(
        401,
        "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.",
        type="invalid_request_error",
        code="invalid_api_key",
    )


def model_not_found(model: str, known: list[str]) -> ApiError:
    return ApiError(
        404,
        f"The model '{model}' does not exist. Models: {', '.join(known)}.",
        type="invalid_request_error",
        code="model_not_found",
        param="model",
    )


def rate_limited(message: str, retry_after_s: int) -> ApiError:
    return ApiError(
        429,
        message,
        type="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after_s)},
    )


def deadline_exceeded(request_id: str, deadline_ms: int) -> ApiError:
    return ApiError(
        504,
        f"No response within the deadline of {deadline_ms} ms.",
        type="timeout",
        code="deadline_exceeded",
        headers={"x-should-retry": "false", "x-fallback-request-id": request_id},
    )


def not_queued(request_id: str) -> ApiError:
    """The broker did not take the request (the cause is logged, not sent)."""
    return ApiError(
        503,
        "The request could not be queued for the pipeline; try again.",
        type="server_error",
        code="not_queued",
        headers={"x-fallback-request-id": request_id},
    )
