"""A tier runs up to `max_in_flight` model calls at once per worker, never more,
and a saturated tier does not hold up the other stages."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
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
        metrics = harness.worker.get("/metrics/")
    assert [r.status for r in responses] == ["served"] * 40
    # The tier's queue went past 3 while it ran two calls at a time: the router
    # paused, and resumed, or not every request would have been answered.
    assert metrics["admission_pauses"] >= 1
