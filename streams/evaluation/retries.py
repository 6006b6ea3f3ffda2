"""The one place that decides whether a failed call is retried on the same tier, and when.

Retries here are not a loop around a call: a retried request is re-published to
its tier's topic with a `not_before` instant, so the delay is a number, not a
sleep. The delay comes from the project's one backoff policy
(`schemas.backoff.Backoff`: exponential, full jitter, capped, above a floor).
The floor is

- the provider's Retry-After when it sent one: never sooner than it asked, with
  jitter above it so the callers it throttled do not all come back at once;
- else `rate_limited_floor_ms` after a 429: a rate limit without Retry-After
  must not be hit again a few milliseconds later;
- else zero (plain full jitter).

A Retry-After longer than `max_retry_after_ms` means "not worth waiting for":
fall back instead.
"""

from __future__ import annotations

import random

from schemas.backoff import Backoff
from streams.config import RetryConfig

__all__ = ["retry_backoff", "retry_delay_s"]


def retry_backoff(retry: RetryConfig, floor_s: float = 0.0) -> Backoff:
    return Backoff(
        initial_s=retry.initial_backoff_ms / 1000.0,
        max_s=retry.max_backoff_ms / 1000.0,
        floor_s=floor_s,
    )


def retry_delay_s(
    retry: RetryConfig,
    retries_so_far: int,
    retry_after_s: float | None,
    rng: random.Random,
    *,
    rate_limited: bool = False,
) -> float | None:
    """Seconds to wait before the next retry, or None when no retry is allowed.

    None when the retries are used up, or when the provider asks for a wait
    (Retry-After) longer than `max_retry_after_ms`.
    """
    if retries_so_far >= retry.max_retries:
        return None
    if retry_after_s is not None:
        if retry_after_s * 1000.0 > retry.max_retry_after_ms:
            return None
        floor_s = retry_after_s
    elif rate_limited:
        floor_s = retry.rate_limited_floor_ms / 1000.0
    else:
        floor_s = 0.0
    return retry_backoff(retry, floor_s).delay_s(retries_so_far, rng)
