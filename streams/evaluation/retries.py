"""The one place that decides whether a failed call is retried on the same tier, and when.

Retries here are not a loop around a call: a retried request is re-published to
its tier's topic with a `not_before` instant, so the delay is a number, not a
sleep. Exponential backoff with full jitter (AWS architecture blog, "Exponential
Backoff and Jitter"): delay = uniform(0, min(max_backoff, initial * 2**n)), and
never sooner than the provider's Retry-After. A Retry-After longer than
`max_retry_after_ms` means "not worth waiting for": fall back instead.

Why not tenacity's `wait_random_exponential`: it draws from the global `random`
module (no injectable generator, so tests cannot pin the jitter), expects a
`RetryCallState` built around a retry loop we do not have, and knows nothing
about Retry-After. The formula is three lines; wrapping it would be contortion.
"""

from __future__ import annotations

import random

from streams.config import RetryConfig

__all__ = ["backoff_ceiling_s", "retry_delay_s", "should_retry"]

# 2**30 times any sane initial backoff is beyond every max_backoff; capping the
# exponent keeps the arithmetic finite whatever retries_so_far is.
_MAX_EXPONENT = 30


def should_retry(error_retryable: bool, retry: RetryConfig, retries_so_far: int) -> bool:
    """Only errors that say they are transient, and only a bounded number of times."""
    return error_retryable and retries_so_far < retry.max_retries


def backoff_ceiling_s(retry: RetryConfig, retries_so_far: int) -> float:
    """The upper end of the jitter range before retry number `retries_so_far + 1`."""
    exponent = min(retries_so_far, _MAX_EXPONENT)
    return min(retry.max_backoff_ms, retry.initial_backoff_ms * 2**exponent) / 1000.0


def retry_delay_s(
    retry: RetryConfig,
    retries_so_far: int,
    retry_after_s: float | None,
    rng: random.Random,
) -> float | None:
    """Seconds to wait before the next retry, or None when no retry is allowed.

    None when the retries are used up, or when the provider asks for a wait
    (Retry-After) longer than `max_retry_after_ms`.
    """
    if retries_so_far >= retry.max_retries:
        return None
    if retry_after_s is not None and retry_after_s * 1000.0 > retry.max_retry_after_ms:
        return None
    jittered = rng.uniform(0.0, backoff_ceiling_s(retry, retries_so_far))
    return max(jittered, retry_after_s or 0.0)
