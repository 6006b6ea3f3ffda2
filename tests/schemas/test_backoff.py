from __future__ import annotations

import logging
import random

import pytest
from aiokafka.errors import KafkaConnectionError

from schemas.backoff import Backoff, is_retryable, retry_async
from schemas.errors import FallbackError

log = logging.getLogger(__name__)


class Transient(FallbackError):
    retryable = True


def test_delay_is_full_jitter_under_a_doubling_cap() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0)
    rng = random.Random(7)
    for tries, cap in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (10_000, 1.0)]:
        delays = [backoff.delay_s(tries, rng) for _ in range(200)]
        assert min(delays) >= 0.0 and max(delays) <= cap
        assert max(delays) > cap * 0.8  # the whole range is used, not a fixed delay


def test_a_floor_is_never_undercut_and_jitter_sits_above_it() -> None:
    backoff = Backoff(initial_s=0.1, max_s=0.5, floor_s=1.0)
    delays = [backoff.delay_s(2, random.Random(i)) for i in range(100)]
    assert min(delays) >= 1.0 and max(delays) <= 1.4
    assert len(set(delays)) > 50


def test_retryable_is_what_the_error_says() -> None:
    assert is_retryable(Transient()) and not is_retryable(FallbackError())
    assert is_retryable(KafkaConnectionError()) and not is_retryable(ValueError())


@pytest.mark.asyncio(loop_scope="session")
async def test_retry_async_retries_only_transient_errors_and_stops_at_max_tries() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Transient("not yet")
        return "done"

    fast = Backoff(initial_s=0.001, max_s=0.002)
    assert await retry_async(flaky, fast, max_tries=5, what="flaky", logger=log) == "done"
    assert len(calls) == 3

    async def broken() -> str:
        calls.append(1)
        raise ValueError("a bug, not an outage")

    calls.clear()
    with pytest.raises(ValueError):
        await retry_async(broken, fast, max_tries=5, what="broken", logger=log)
    assert len(calls) == 1

    async def down() -> str:
        calls.append(1)
        raise Transient("down")

    calls.clear()
    with pytest.raises(Transient):
        await retry_async(down, fast, max_tries=4, what="down", logger=log)
    assert len(calls) == 4
