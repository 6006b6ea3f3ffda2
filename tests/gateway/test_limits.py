"""Per-key limits: a token bucket per minute, a cap on calls in flight."""

from __future__ import annotations

import pytest

from streams.gateway.keys import Caller
from streams.gateway.limits import KeyLimits, TokenBucket


def caller(rpm: int | None = None, in_flight: int | None = None) -> Caller:
    return Caller("k", "t", requests_per_minute=rpm, max_in_flight=in_flight)


def test_a_bucket_holds_a_minute_and_refills_evenly() -> None:
    bucket = TokenBucket(per_minute=60)
    assert all(bucket.take(0.0) == 0.0 for _ in range(60))
    assert bucket.take(0.0) == pytest.approx(1.0)  # one token a second
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0) == 0.0
    assert bucket.take(1000.0) == 0.0 and bucket.tokens == pytest.approx(59)  # capped


def test_requests_per_minute_refuses_with_retry_after() -> None:
    limits = KeyLimits()
    who = caller(rpm=2)
    assert limits.admit(who, 0.0) is None
    limits.release(who)
    assert limits.admit(who, 0.0) is None
    limits.release(who)
    refusal = limits.admit(who, 1.0)
    assert refusal is not None and refusal.retry_after_s == 29  # half a token in 29 s
    assert "2 requests per minute" in refusal.message
    assert limits.admit(who, 31.0) is None


def test_in_flight_refuses_until_a_call_ends() -> None:
    limits = KeyLimits()
    who = caller(in_flight=2)
    assert limits.admit(who, 0.0) is None
    assert limits.admit(who, 0.0) is None
    refusal = limits.admit(who, 0.0)
    assert refusal is not None and refusal.retry_after_s == 1
    limits.release(who)
    assert limits.admit(who, 0.0) is None


def test_a_key_without_limits_is_never_refused() -> None:
    limits = KeyLimits()
    assert all(limits.admit(caller(), 0.0) is None for _ in range(10_000))


def test_refused_in_flight_calls_take_no_token() -> None:
    limits = KeyLimits()
    who = caller(rpm=1, in_flight=1)
    assert limits.admit(who, 0.0) is None
    assert limits.admit(who, 0.0) is not None  # in flight: the bucket is not touched
    limits.release(who)
    assert limits.admit(who, 60.0) is None
