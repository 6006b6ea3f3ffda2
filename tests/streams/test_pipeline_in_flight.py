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
