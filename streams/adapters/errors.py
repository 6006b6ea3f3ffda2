"""What can go wrong in a model call, each error naming its verdict trigger.

ModelError (schemas.errors.FallbackError)        verdict trigger, retryable?
├── ModelTimeout            no complete answer in time      timeout, retryable
├── ModelUnavailable        5xx, refused/reset, OOM         error, retryable
├── RateLimited             429, carries retry_after_s      rate_limited, retryable
├── StreamTruncated         cut / no finish / no [DONE]     truncated, retryable
├── MalformedResponse       unparseable body or chunk       error
├── ContextLengthExceeded   prompt too long for the model   context_length
├── ContentPolicyViolation  provider refused on policy      policy
└── ModelRequestRejected    other 4xx: our request is bad   error
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
