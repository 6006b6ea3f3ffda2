"""Failed calls in the log: rate-limited per tier and trigger, counts kept, no text."""

from __future__ import annotations

import logging

import pytest

from schemas.events import Trigger
from streams.stages.failed_call_log import FailedCallLog
from tests.clock import FakeClock


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_one_line_per_tier_and_trigger_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    failures = FailedCallLog(interval_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(300):  # 300 timeouts, 16 a second
            failures.failed("primary", Trigger.TIMEOUT, "gpt-x")
            clock.advance(0.0625)
        failures.failed("primary", Trigger.ERROR, "gpt-x")
        failures.failed("backup", Trigger.TIMEOUT, "small")
    assert lines(caplog) == [
        "tier primary: a call to gpt-x failed (timeout)",
        "tier primary: 160 calls to gpt-x failed (timeout) in 10 s",
        "tier primary: a call to gpt-x failed (error)",
        "tier backup: a call to small failed (timeout)",
    ]
    clock.advance(10.0)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        failures.failed("primary", Trigger.TIMEOUT, "gpt-x")
    # the 139 counted since the last line, and this one
    assert lines(caplog) == ["tier primary: 140 calls to gpt-x failed (timeout) in 19 s"]
