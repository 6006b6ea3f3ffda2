"""Guard against faust-streaming issue #606: a commit must never pass an un-acked event.

Faust 0.15.3's `Consumer._new_offset` commits past a gap in the acked offsets
when the partition's committed offset is still unknown (or one below the gap).
With many model calls in flight, a slow first call and fast later ones produce
exactly that gap; a crash then loses the slow request.  The stage consumer
commits through `OffsetTracker`, which only moves past a finished head.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from streams.kafka.offsets import OffsetTracker
from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config, scripted_tier


@dataclass(frozen=True)
class FakeTP:
    topic: str
    partition: int


def test_faust_new_offset_still_skips_a_gap_at_the_head() -> None:
    """Documents the upstream bug the guard exists for; if this starts failing,
    faust fixed #606 and the guard may be revisited (keep the e2e test)."""
    from faust.transport.consumer import Consumer
    from intervaltree import IntervalTree

    tp = FakeTP("t", 0)
    state = SimpleNamespace(
        _acked=defaultdict(list, {tp: [1, 2, 3]}),  # offset 0 is still in flight
        _acked_index=defaultdict(set, {tp: {1, 2, 3}}),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None),
    )
    assert Consumer._new_offset(state, tp) == 4  # type: ignore[arg-type]  # past offset 0: the loss


def test_offsets_become_committable_in_offset_order_only() -> None:
    tracker = OffsetTracker()
    tp = FakeTP("t", 0)
    entries = [tracker.track(tp, offset) for offset in range(5)]
    for entry in entries[1:]:
        assert tracker.finish(entry) == 0  # finished, but offset 0 is not
    assert tracker.to_commit() == {}
    assert tracker.finish(entries[0]) == 5
    assert tracker.to_commit() == {tp: 5} and not tracker.pending[tp]


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    slow = tracker.track(FakeTP("t", 0), 0)
    fast = tracker.track(FakeTP("t", 1), 0)
    tracker.finish(fast)
    assert tracker.to_commit() == {FakeTP("t", 1): 1}
    tracker.finish(slow)
    assert tracker.to_commit() == {FakeTP("t", 0): 1, FakeTP("t", 1): 1}


def test_only_moved_offsets_are_committed_again() -> None:
    tracker = OffsetTracker()
    tp = FakeTP("t", 0)
    tracker.finish(tracker.track(tp, 7))
    tracker.mark_committed(tracker.to_commit())
    assert tracker.to_commit() == {}
    tracker.finish(tracker.track(tp, 8))
    assert tracker.to_commit() == {tp: 9}


def test_a_revoked_partition_late_finisher_commits_nothing() -> None:
    tracker = OffsetTracker()
    tp = FakeTP("t", 0)
    running = tracker.track(tp, 3)
    tracker.forget([tp])
    tracker.track(tp, 10)  # reassigned later, from the committed offset
    assert tracker.finish(running) == 0
    assert tracker.to_commit() == {}


@pytest.mark.asyncio(loop_scope="session")
async def test_slow_request_survives_a_crash_after_later_ones_committed(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """The regression test: one slow call, many fast ones on the same partition,
    commits happen, the worker is killed; the slow request must still be answered."""
    config = pipeline_config(
        broker,
        tmp_path,
        [scripted_tier("primary", timeout_ms=20000, accept={})],
        kafka={"partitions": 1, "commit_interval_s": 0.2},
        analytics={"enabled": False},
    )
    tier_topic = f"{config.kafka.topic_prefix}tier.primary"
    async with harness_for(config, tmp_path) as first:
        slow = first.new_request({"primary": "sleep:6000"}, request_id="slow-one")
        slow_answer = await first.send(slow)
        await first.client.producer.flush()
        fast = [first.new_request() for _ in range(30)]
        served = await first.ask_many(fast, timeout_s=30)
        assert all(r.status == "served" for r in served)
        await asyncio.sleep(1.5)  # several commit intervals
        committed = await first.committed_offsets(tier_topic)
        # The slow request is offset 0 of the tier topic: nothing may be committed past it.
        assert (committed.get(0) or 0) <= 0, f"committed past the in-flight event: {committed}"
        assert not slow_answer.done()
        first.worker.kill()  # crash: no flush, no commit, no goodbye
    async with harness_for(config, tmp_path) as second:
        # Nothing is sent again: the restarted worker must find the slow request's
        # uncommitted tier event on its own and answer it.
        response = await asyncio.wait_for(second.expect("slow-one"), 60)
        assert response.request_id == "slow-one" and response.status == "served"


def test_given_up_records_hold_commits_but_are_not_waited_for() -> None:
    tracker = OffsetTracker()
    tp, other = FakeTP("t", 0), FakeTP("t", 1)
    stalled, running = tracker.track(tp, 0), tracker.track(tp, 1)
    tracker.track(other, 0)
    assert tracker.unsettled() == 3 and tracker.unsettled([tp]) == 2
    tracker.give_up(stalled)
    tracker.finish(running)
    assert tracker.unsettled([tp]) == 0 and tracker.unsettled() == 1
    assert tracker.to_commit() == {}  # never past the given-up record
