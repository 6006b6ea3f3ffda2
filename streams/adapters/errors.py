"""What can go wrong in a model call, each error naming its verdict trigger.

ModelError (schemas.errors.FallbackError)        verdict trigger, retryable?
├── ModelTimeout            no complete answer in time      timeout, retryable
├── ModelUnavailable        5xx, refused/reset, OOM         error, retryable
├── RateLimited             429, carries retry_after_s      rate_limited, retryable
├── StreamTruncated         cut / no finish / no [DONE]     truncated, retryable
├── MalformedResponse       unparseable body or chunk       error
├── ContextLengthExceeded   prompt too long for the model   context_length
├── ContentPolicyViolation  provider refused on policy      policy
├── ModelAccessRefused      401/403/404, quota used up      error
├── ModelRequestRejected    the request itself is bad       bad_request
└── NotSentBeforeDeadline   queued in the worker until      deadline (never sent)
                            too little time was left

`bad_request` is for what the request causes: input the adapter cannot take
(chat messages sent to a digits tier), non-finite numbers, a 4xx other than
408/429 that the provider answers to this request (`assistant_prefill_not_
supported`).  The same request fails the same way everywhere, so it is not
retried, and it never counts against the tier's health: one tenant's bad
input must not open the circuit for every tenant.  `ModelAccessRefused` is the
opposite case: the tier's key, model name or quota is wrong, no request can
cause or cure it, and every request would fail the same way, so it counts.
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


class ModelAccessRefused(ModelError):
    """The tier itself is refused (key, model, quota): counts against its health."""

    trigger = Trigger.ERROR


class ModelRequestRejected(ModelError):
    """The request is bad (the caller's fault, not the tier's): never counts against health."""

    trigger = Trigger.BAD_REQUEST


class NotSentBeforeDeadline(ModelError):
    """The call waited in the worker (for a connection, a thread) until sending it was
    no longer worth it: the request's deadline, not the model's health."""

    trigger = Trigger.DEADLINE
