"""The project's one backoff policy and its one retry loop.

Every wait between tries in the project comes from `Backoff.delay_s`:
exponential with full jitter (AWS architecture blog, "Exponential Backoff and
Jitter"), delay = floor + uniform(0, min(max_s, initial_s * 2**n)).  Users:

- the evaluation layer's same-tier retries (`streams/evaluation/retries.py`),
  where the delay is a number put on the re-published request, not a sleep;
- `retry_async` below, the only loop that sleeps between tries, used by the
  publisher (Kafka sends) and the ClickHouse sink (batch writes).

Only errors that say they are transient are retried: the project's errors
carry `retryable`, aiokafka's carry `retriable` (`is_retryable`).

It lives in schemas/, the bottom layer every package may import, because
analytics/ must not import streams/ and both need it.

Why not tenacity: its jitter draws from the global `random` module (tests
could not pin it), and the evaluation layer needs the delay as a value, not
a loop; the policy is a few lines.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Backoff", "is_retryable", "retry_async"]

T = TypeVar("T")

# 2**30 times any sane initial delay is beyond every cap; capping the exponent
# keeps the arithmetic finite whatever the number of tries so far.
_MAX_EXPONENT = 30


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, capped, optionally above a floor."""

    initial_s: float
    max_s: float
    #: never sooner than this (a rate-limited retry waits at least this long)
    floor_s: float = 0.0

    def ceiling_s(self, tries_so_far: int) -> float:
        """The upper end of the jitter range before try number `tries_so_far + 1`."""
        exponent = min(max(tries_so_far, 0), _MAX_EXPONENT)
        return min(self.max_s, self.initial_s * 2**exponent)

    def delay_s(self, tries_so_far: int, rng: random.Random | None = None) -> float:
        draw = (rng or random).uniform(0.0, self.ceiling_s(tries_so_far))
        return self.floor_s + draw


def is_retryable(exc: BaseException) -> bool:
    """True when the error says it is transient (`retryable`, or aiokafka's `retriable`)."""
    return bool(getattr(exc, "retryable", False) or getattr(exc, "retriable", False))


async def retry_async(
    operation: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    max_tries: int | None,
    what: str,
    logger: logging.Logger,
    retryable: Callable[[BaseException], bool] = is_retryable,
    rng: random.Random | None = None,
) -> T:
    """Run `operation` until it succeeds, retrying only errors `retryable` accepts.

    `max_tries=None` retries for ever (a caller that must not lose data and
    can wait, like the sink). Each failed try writes one log line, without a
    traceback, so a long outage does not flood the log. The last error is
    raised as it is when tries run out or the error is not retryable.
    """
    tries = 0
    while True:
        try:
            return await operation()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            tries += 1
            if not retryable(exc) or (max_tries is not None and tries >= max_tries):
                raise
            delay = backoff.delay_s(tries - 1, rng)
            logger.warning(
                "%s failed (try %d): %s: %s; retrying in %.2f s",
                what,
                tries,
                type(exc).__name__,
                exc,
                delay,
            )
            await asyncio.sleep(delay)
