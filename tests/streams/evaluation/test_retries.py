"""Same-tier retries: the one backoff policy, Retry-After, the rate-limit floor, the budget."""

from __future__ import annotations

import random

import pytest

from schemas.backoff import Backoff
from streams.config import RetryConfig
from streams.evaluation.retries import retry_backoff, retry_delay_s

RETRY = RetryConfig(
    max_retries=3,
    initial_backoff_ms=100.0,
    max_backoff_ms=1000.0,
    max_retry_after_ms=5000.0,
    rate_limited_floor_ms=1000.0,
)


def delays(
    retries_so_far: int,
    retry_after_s: float | None = None,
    *,
    rate_limited: bool = False,
    retry: RetryConfig = RETRY,
    count: int = 500,
    seed: int = 7,
) -> list[float]:
    rng = random.Random(seed)
    found = [
        retry_delay_s(retry, retries_so_far, retry_after_s, rng, rate_limited=rate_limited)
        for _ in range(count)
    ]
    assert all(delay is not None for delay in found)
    return [delay for delay in found if delay is not None]


def test_no_retry_when_retries_are_used_up() -> None:
    rng = random.Random(1)
    assert retry_delay_s(RETRY, 3, None, rng) is None
    assert retry_delay_s(RETRY, 3, None, rng, rate_limited=True) is None
    assert retry_delay_s(RetryConfig(), 0, None, rng) is None  # default max_retries 0


def test_the_policy_is_the_projects_one_backoff() -> None:
    assert retry_backoff(RETRY) == Backoff(initial_s=0.1, max_s=1.0, floor_s=0.0)
    assert [retry_backoff(RETRY).ceiling_s(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    # Same generator state, same draw: retry_delay_s is Backoff.delay_s and nothing else.
    expected = retry_backoff(RETRY).delay_s(2, random.Random(42))
    assert retry_delay_s(RETRY, 2, None, random.Random(42)) == expected


def test_full_jitter_from_zero_for_an_ordinary_error() -> None:
    found = delays(2)
    assert all(0.0 <= d <= 0.4 for d in found)
    assert min(found) < 0.05  # full jitter reaches down to zero
    assert len({round(d, 3) for d in found}) > 100  # jittered, not a fixed value


def test_same_seed_same_delays() -> None:
    assert delays(1, count=3, seed=42) == delays(1, count=3, seed=42)


def test_a_429_without_retry_after_waits_at_least_the_floor_with_jitter_above() -> None:
    many = RETRY.model_copy(update={"max_retries": 10})
    for retries_so_far, ceiling in [(0, 0.1), (2, 0.4), (9, 1.0)]:
        found = delays(retries_so_far, rate_limited=True, retry=many)
        assert all(1.0 <= d <= 1.0 + ceiling for d in found), retries_so_far
        assert len({round(d, 3) for d in found}) > 50  # spread above the floor


def test_the_rate_limit_floor_is_configurable() -> None:
    none = RETRY.model_copy(update={"rate_limited_floor_ms": 0.0})
    assert min(delays(0, rate_limited=True, retry=none)) < 0.01
    assert min(delays(0, rate_limited=True, retry=RetryConfig(max_retries=1))) >= 1.0  # default


@pytest.mark.parametrize("rate_limited", [True, False])
def test_never_sooner_than_retry_after_with_jitter_above_it(rate_limited: bool) -> None:
    found = delays(0, 2.5, rate_limited=rate_limited)
    assert all(2.5 <= d <= 2.6 for d in found)
    assert len({round(d, 4) for d in found}) > 50  # throttled callers do not return in step


def test_retry_after_wins_over_the_rate_limit_floor() -> None:
    """The provider said when: a short Retry-After is not stretched to the floor."""
    found = delays(0, 0.02, rate_limited=True)
    assert all(0.02 <= d <= 0.12 for d in found)


def test_retry_after_beyond_the_limit_means_fall_back() -> None:
    rng = random.Random(3)
    assert retry_delay_s(RETRY, 0, 5.0, rng, rate_limited=True) is not None
    assert retry_delay_s(RETRY, 0, 5.001, rng, rate_limited=True) is None
    assert retry_delay_s(RETRY, 0, 5.001, rng) is None
