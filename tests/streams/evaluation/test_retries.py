"""Backoff with full jitter, Retry-After, and the retry budget."""

from __future__ import annotations

import random

from streams.config import RetryConfig
from streams.evaluation.retries import backoff_ceiling_s, retry_delay_s, should_retry

RETRY = RetryConfig(
    max_retries=3, initial_backoff_ms=100.0, max_backoff_ms=1000.0, max_retry_after_ms=5000.0
)


def test_no_retry_when_retries_are_used_up() -> None:
    rng = random.Random(1)
    assert retry_delay_s(RETRY, 3, None, rng) is None
    assert retry_delay_s(RetryConfig(), 0, None, rng) is None  # default max_retries 0


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    assert [backoff_ceiling_s(RETRY, n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff_ceiling_s(RETRY, 10_000) == 1.0  # no overflow


def test_full_jitter_stays_within_the_ceiling_and_spreads() -> None:
    rng = random.Random(7)
    delays = [retry_delay_s(RETRY, 2, None, rng) for _ in range(500)]
    assert all(d is not None and 0.0 <= d <= 0.4 for d in delays)
    assert len({round(d or 0.0, 3) for d in delays}) > 100  # jittered, not a fixed value


def test_same_seed_same_delays() -> None:
    first = [retry_delay_s(RETRY, 1, None, random.Random(42)) for _ in range(3)]
    second = [retry_delay_s(RETRY, 1, None, random.Random(42)) for _ in range(3)]
    assert first == second


def test_never_sooner_than_retry_after() -> None:
    rng = random.Random(3)
    assert all(retry_delay_s(RETRY, 0, 2.5, rng) == 2.5 for _ in range(50))


def test_retry_after_beyond_the_limit_means_fall_back() -> None:
    rng = random.Random(3)
    assert retry_delay_s(RETRY, 0, 5.0, rng) is not None
    assert retry_delay_s(RETRY, 0, 5.001, rng) is None


def test_should_retry_only_retryable_errors_within_budget() -> None:
    assert should_retry(True, RETRY, 0)
    assert should_retry(True, RETRY, 2)
    assert not should_retry(True, RETRY, 3)
    assert not should_retry(False, RETRY, 0)
