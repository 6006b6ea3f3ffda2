"""CallClock: the call's limit starts when the adapter says the request was sent."""

from __future__ import annotations

import asyncio

import pytest

from streams.adapters.base import CallClock
from streams.adapters.errors import NotSentBeforeDeadline


async def test_the_limit_runs_from_the_start_unless_the_adapter_queues() -> None:
    async with asyncio.timeout(None) as timer:
        clock = CallClock(timer, limit_s=5.0)
        assert clock.was_sent and timer.when() == pytest.approx(clock.started_at + 5.0)
        clock.queued()  # no deadline: the wait is unbounded
        assert not clock.was_sent and timer.when() is None
        await asyncio.sleep(0.05)
        clock.sent()
        assert clock.sent_at is not None
        assert timer.when() == pytest.approx(clock.sent_at + 5.0)
        assert clock.queue_wait_s() >= 0.05


async def test_the_deadline_bounds_the_queue_and_cuts_the_limit() -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as timer:
        deadline_at = loop.time() + 2.0
        clock = CallClock(timer, limit_s=5.0, send_by=deadline_at - 1.0, deadline_at=deadline_at)
        assert timer.when() == pytest.approx(deadline_at)
        clock.queued()
        assert timer.when() == pytest.approx(deadline_at - 1.0)
        clock.sent()
        assert timer.when() == pytest.approx(deadline_at)  # the deadline comes first
        assert clock.call_limit_s() == pytest.approx(2.0, abs=0.05)


async def test_too_late_to_send_is_not_sent() -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as timer:
        clock = CallClock(timer, limit_s=1.0, send_by=loop.time() - 0.01)
        clock.queued()
        with pytest.raises(NotSentBeforeDeadline, match="queued"):
            clock.sent()
        assert not clock.was_sent


async def test_queued_after_sent_changes_nothing() -> None:
    """A wrapper standing for the model (fault injection) marks the call sent first."""
    async with asyncio.timeout(None) as timer:
        clock = CallClock(timer, limit_s=1.0)
        clock.sent()
        sent_at = clock.sent_at
        clock.queued()
        clock.sent()
        assert clock.sent_at == sent_at and timer.when() == pytest.approx(sent_at + 1.0)


def test_without_a_timer_it_only_records() -> None:
    clock = CallClock()
    clock.queued()
    clock.sent()
    assert clock.was_sent and clock.call_limit_s() is None
