"""A tier runs up to `max_in_flight` model calls at once per worker, never more;
a saturated tier does not hold up the other stages; admission control and
rebalances lose no request and leave no call half done."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from streams.app import stage_group_id
from streams.kafka.client_options import kafka_client_options
from streams.kafka.topics import pipeline_topics
from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config, scripted_tier

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_tier_runs_exactly_its_window_of_calls_at_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    config = pipeline_config(
        broker,
        tmp_path,
        [scripted_tier("primary", max_in_flight=3, circuit={"enabled": False})],
        analytics={"enabled": False},
    )
    async with harness_for(config, tmp_path) as harness:
        slow = [harness.new_request({"primary": "overlap:200"}) for _ in range(15)]
        responses = await harness.ask_many(slow, timeout_s=60)
        # While the tier is saturated, the router keeps routing: a request sent
        # after the slow ones was routed before they all finished.
        quick = await harness.ask({"primary": "ok"}, timeout_s=30)
    assert all(r.status == "served" for r in responses)
    peaks = [r.output["content"]["peak_running"] for r in responses]
    assert max(peaks) == 3, f"calls running at once: {sorted(peaks)}"
    assert quick.status == "served"


async def test_admission_pauses_the_router_and_every_request_is_still_served(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    config = pipeline_config(
        broker,
        tmp_path,
        [scripted_tier("primary", max_in_flight=2, circuit={"enabled": False})],
        analytics={"enabled": False},
        worker={"max_queued_records": 3},
    )
    async with harness_for(config, tmp_path) as harness:
        requests = [harness.new_request({"primary": "sleep:50"}) for _ in range(40)]
        responses = await harness.ask_many(requests, timeout_s=60)
        metrics = harness.worker.get("/stats/")
    assert [r.status for r in responses] == ["served"] * 40
    # The tier's queue went past 3 while it ran two calls at a time: the router
    # paused, and resumed, or not every request would have been answered.
    assert metrics["admission_pauses"] >= 1


async def test_partitions_given_up_in_a_rebalance_carry_no_unfinished_call(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """A member joins the stages' group while the worker's calls run: the worker
    finishes them and commits before giving partitions up, so whoever gets the
    tier partitions finds no call to make again."""
    config = pipeline_config(
        broker,
        tmp_path,
        [scripted_tier("primary", timeout_ms=5000, accept={}, circuit={"enabled": False})],
        analytics={"enabled": False},
    )
    topics = pipeline_topics(config)
    async with harness_for(config, tmp_path) as harness:
        slow = [harness.new_request({"primary": "sleep:2000"}) for _ in range(20)]
        waiters = [await harness.send(request) for request in slow]
        await harness.client.producer.flush()
        await asyncio.sleep(0.5)  # routed; the calls are running
        member = AIOKafkaConsumer(
            topics.requests,
            topics.tier("primary"),
            topics.attempts("primary"),
            **kafka_client_options(config.kafka),
            group_id=stage_group_id(config),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        await member.start()
        found: list[ConsumerRecord[bytes, bytes]] = []
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not member.assignment():
                batch = await member.getmany(timeout_ms=200)
                found += [record for records in batch.values() for record in records]
            for _ in range(10):  # what the worker left uncommitted on its former partitions
                batch = await member.getmany(timeout_ms=200)
                found += [record for records in batch.values() for record in records]
            joined = bool(member.assignment())
        finally:
            await member.stop()  # leaves without committing: the worker takes all back
        responses = await asyncio.wait_for(asyncio.gather(*waiters), 60)
    assert joined, "the extra member never got partitions"
    calls_left = [r.key for r in found if r.topic == topics.tier("primary")]
    assert calls_left == [], f"{len(calls_left)} routed requests were given up unfinished"
    assert all(r.status == "served" for r in responses)
