"""SIGTERM under load: the worker exits 0 within `worker.shutdown_grace_s`;
what finished is committed (never answered twice), what did not is re-read
by the next worker (never lost)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config
from tests.pipeline.delivery_check import (
    all_responses,
    implied_attempts,
    verdict_events,
    verdict_rows,
)

REQUESTS = 1500
#: requests whose call outlives the grace in the first worker
HANGING = 10
GRACE_S = 5.0
#: scheduling and interpreter exit on a loaded machine
EXIT_MARGIN_S = 1.0


def hanging_tier(name: str, marker: Path) -> dict[str, object]:
    return {
        "name": name,
        "adapter": {
            "kind": "python",
            "callable": "tests.pipeline.crash_models:hang_until",
            "options": {"marker": str(marker)},
        },
        "timeout_ms": 600_000,
        "max_in_flight": 50,
        "accept": {},
    }


async def test_sigterm_under_load_exits_in_the_grace_and_replays_only_unfinished_work(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """The hanging requests have a tier of their own (tag `slow`): in-order
    commits stop at a partition's first unfinished record, so finished work
    behind one in the same partition would be re-done by design."""
    marker = tmp_path / "answer-the-hanging-requests"
    config = pipeline_config(
        broker,
        tmp_path,
        [hanging_tier("primary", marker), hanging_tier("slow", marker)],
        policy={"rules": [{"name": "slow-lane", "tags": ["slow"], "allow_tiers": ["slow"]}]},
        worker={"shutdown_grace_s": GRACE_S},
    )
    async with harness_for(config, tmp_path) as first:
        hanging = [first.new_request(input={"hang": True}, tags=["slow"]) for _ in range(HANGING)]
        requests = hanging + [first.new_request() for _ in range(REQUESTS)]
        for request in requests:
            await first.send(request)
        await first.client.producer.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(first.responses) < REQUESTS // 4 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        answered_before = len(first.responses)
        started = time.monotonic()
        os.killpg(first.worker.process.pid, signal.SIGTERM)
        code = await asyncio.to_thread(first.worker.process.wait, 30)
        took = time.monotonic() - started
        log = first.worker.log_tail(100)
    print(
        f"SIGTERM with {answered_before} of {len(requests)} answered: "
        f"exit {code} after {took:.2f} s (grace {GRACE_S} s)"
    )
    assert code == 0, log
    assert took <= GRACE_S + EXIT_MARGIN_S, log
    assert answered_before < REQUESTS  # the stop did cut into the load
    assert f"stopping with {HANGING} records unfinished" in log, log

    marker.touch()  # the replayed hanging calls answer in the next worker
    wanted = {r.request_id for r in requests}
    async with harness_for(config, tmp_path) as second:
        responses = await all_responses(config, wanted, timeout_s=120)
        per_attempt = await verdict_events(config)
        second.worker.stop()  # releases the chDB directory
    per_request = Counter(r.request_id for r in responses)
    duplicated = sum(n - 1 for n in per_request.values())
    print(
        f"after restart: {len(per_request)} of {len(wanted)} answered, "
        f"{duplicated} answered twice, {sum(per_attempt.values()) - len(per_attempt)} "
        "duplicate verdicts"
    )
    assert set(per_request) == wanted  # nothing lost
    assert duplicated == 0  # nothing finished was re-done
    assert set(per_attempt.values()) == {1}
    assert set(per_attempt) == implied_attempts(responses)
    rows = verdict_rows(config)
    assert set(rows.per_key) == set(per_attempt)
    assert rows.raw == rows.unique  # raw rows: a duplicate row fails this
