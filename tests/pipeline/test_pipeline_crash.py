"""A worker that dies or wedges loses nothing: its replacement answers what it left."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config
from tests.pipeline.delivery_check import all_responses


async def test_a_stuck_partition_stops_the_worker_and_its_replacement_answers(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """One request's call never returns in the first worker; the partition's
    commits stop there while later records keep coming.  After
    `worker.stuck_after_s` the worker exits non-zero; a restarted worker
    re-reads the uncommitted request and answers it."""
    marker = tmp_path / "answer-the-hung-request"
    config = pipeline_config(
        broker,
        tmp_path,
        [
            {
                "name": "primary",
                "adapter": {
                    "kind": "python",
                    "callable": "tests.pipeline.crash_models:hang_until",
                    "options": {"marker": str(marker)},
                },
                "timeout_ms": 3_600_000,
                "accept": {},
            }
        ],
        worker={"stuck_after_s": 3},
        analytics={"enabled": False},
    )
    async with harness_for(config, tmp_path) as first:
        hung = await first.send(first.new_request(input={"hang": True}, request_id="hung"))
        others = [first.new_request() for _ in range(20)]
        served = await first.ask_many(others, timeout_s=30)
        assert {r.status for r in served} == {"served"}
        assert not hung.done()
        started = time.monotonic()
        code = await asyncio.to_thread(first.worker.process.wait, 60)
        waited = time.monotonic() - started
        log = first.worker.log_tail(200)
    print(f"stuck worker exited with {code} {waited:.1f} s after the other requests were served")
    assert code not in (0, None), log
    assert "stuck consumer" in log and "primary[" in log, log
    marker.touch()  # the replacement's call answers
    wanted = {"hung"} | {r.request_id for r in others}
    async with harness_for(config, tmp_path):
        # Read from the start: the replacement may answer before a listener joins.
        responses = await all_responses(config, wanted, timeout_s=60)
    assert {r.request_id: r.status for r in responses}.get("hung") == "served"
    assert {r.request_id for r in responses} == wanted
