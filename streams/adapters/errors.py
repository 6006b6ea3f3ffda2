"""What can go wrong in a model call, each error naming its verdict trigger.

    ModelError (schemas.errors.FallbackError)
    ├── ModelTimeout              no (complete) answer in time          trigger timeout, retryable
    ├── ModelUnavailable          5xx, connection refused/reset, OOM     trigger error, retryable
    ├── RateLimited               429; carries retry_after_s             trigger rate_limited, retryable
    ├── StreamTruncated           stream cut / no finish / no [DONE]     trigger truncated, retryable
    ├── MalformedResponse         unparseable body or chunk              trigger error
    ├── ContextLengthExceeded     prompt too long for this model         trigger context_length
    ├── ContentPolicyViolation    provider refused on content policy     trigger policy
    └── ModelRequestRejected      other 4xx: our request is wrong        trigger error
"""

from __future__ import annotations

from schemas.errors import FallbackError
from schemas.events import Trigger


class ModelError(FallbackError):
    trigger: Trigger = Trigger.ERROR

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelTimeout(ModelError):
    trigger = Trigger.TIMEOUT
    retryable = True


class ModelUnavailable(ModelError):
    trigger = Trigger.ERROR
    retryable = True


class RateLimited(ModelError):
    trigger = Trigger.RATE_LIMITED
    retryable = True


class StreamTruncated(ModelError):
    trigger = Trigger.TRUNCATED
    retryable = True


class MalformedResponse(ModelError):
    trigger = Trigger.ERROR


class ContextLengthExceeded(ModelError):
    trigger = Trigger.CONTEXT_LENGTH

    def __init__(self, message: str, *, needed_tokens: int | None = None) -> None:
        super().__init__(message)
        self.needed_tokens = needed_tokens


class ContentPolicyViolation(ModelError):
    trigger = Trigger.POLICY


class ModelRequestRejected(ModelError):
    trigger = Trigger.ERROR
