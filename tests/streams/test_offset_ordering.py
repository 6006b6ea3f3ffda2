"""Guard against faust-streaming issue #606: a commit must never pass an un-acked event.

Faust 0.15.3's `Consumer._new_offset` commits past a gap in the acked offsets
when the partition's committed offset is still unknown (or one below the gap).
With many model calls in flight, a slow first call and fast later ones produce
exactly that gap; a crash then loses the slow request.  `OffsetOrderedAcks`
hands Faust acks in offset order only.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streams.broker import EmbeddedBroker
from streams.inflight import OffsetOrderedAcks
from tests.conftest import harness_for, pipeline_config, scripted_tier


@dataclass(frozen=True)
class FakeTP:
    topic: str
    partition: int


@dataclass
class FakeMessage:
    tp: FakeTP
    offset: int


@dataclass
class FakeEvent:
    message: FakeMessage


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


async def test_acks_are_released_in_offset_order_only() -> None:
    acked: list[int] = []

    async def ack(event: Any) -> None:
        acked.append(event.message.offset)

    acks = OffsetOrderedAcks(ack=ack)
    tp = FakeTP("t", 0)
    entries = [acks.track(FakeEvent(FakeMessage(tp, offset))) for offset in range(5)]  # type: ignore[arg-type]
    for entry in entries[1:]:
        assert await acks.finish(entry) == 0  # finished, but offset 0 is not
    assert acked == [] and acks.oldest_unfinished_offset(tp) == 0
    assert await acks.finish(entries[0]) == 5
    assert acked == [0, 1, 2, 3, 4] and acks.in_flight() == 0


async def test_partitions_are_independent() -> None:
    acked: list[tuple[int, int]] = []

    async def ack(event: Any) -> None:
        acked.append((event.message.tp.partition, event.message.offset))

    acks = OffsetOrderedAcks(ack=ack)
    slow = acks.track(FakeEvent(FakeMessage(FakeTP("t", 0), 0)))  # type: ignore[arg-type]
    fast = acks.track(FakeEvent(FakeMessage(FakeTP("t", 1), 0)))  # type: ignore[arg-type]
    await acks.finish(fast)
    assert acked == [(1, 0)]
    await acks.finish(slow)
    assert acked == [(1, 0), (0, 0)]


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
