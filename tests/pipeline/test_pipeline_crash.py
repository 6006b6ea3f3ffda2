"""A worker that dies or wedges loses nothing: its replacement answers what it left.

Each test prints its figures (requests, lost, duplicated, time to recover)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config, scripted_tier
from tests.pipeline.delivery_check import (
    all_responses,
    implied_attempts,
    uncommitted_records,
    verdict_events,
    verdict_rows,
)


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


REQUESTS = 3000
#: each request's path: served by primary, by backup after primary fails, or by local
PATHS = [
    {"primary": "sleep:200"},
    {"primary": "error", "backup": "sleep:200"},
    {"primary": "error", "backup": "error", "local": "sleep:200"},
]
PIPELINE_TOPICS = ("requests", "tier.primary", "tier.backup", "tier.local")


def model_tier(name: str) -> dict[str, Any]:
    """A 200 ms model (the scripted python callable), 300 calls at once, circuit off."""
    return scripted_tier(
        name,
        timeout_ms=5000,
        max_in_flight=300,
        accept={"max_latency_ms": 3000, "min_confidence": 0.8},
        circuit={"enabled": False},
    )


async def test_sigkill_under_load_loses_nothing_and_duplicates_only_the_uncommitted(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    config = pipeline_config(
        broker, tmp_path, [model_tier("primary"), model_tier("backup"), model_tier("local")]
    )
    prefix = config.kafka.topic_prefix
    async with harness_for(config, tmp_path) as first:
        requests = [first.new_request(PATHS[i % len(PATHS)]) for i in range(REQUESTS)]
        for request in requests:
            await first.send(request)
        await first.client.producer.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while len(first.responses) < REQUESTS // 3 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        answered_before = len(first.responses)
        first.worker.kill()  # SIGKILL: no drain, no flush, no commit
        killed_at = time.monotonic()
        # Every record past its partition's committed offset is re-read; each can
        # lead to at most one more response.
        window = 0
        for name in PIPELINE_TOPICS + tuple(
            f"attempts.{t}" for t in ("primary", "backup", "local")
        ):
            committed = await first.committed_offsets(prefix + name)
            window += await uncommitted_records(config, prefix + name, committed)
    wanted = {r.request_id for r in requests}
    async with harness_for(config, tmp_path) as second:
        responses = await all_responses(config, wanted, timeout_s=120)
        recovered_s = time.monotonic() - killed_at - 2.0  # all_responses waits 2 s idle
        per_attempt = await verdict_events(config)
        second.worker.stop()  # releases the chDB directory
    per_request = Counter(r.request_id for r in responses)
    lost = len(wanted - set(per_request))
    duplicated = sum(n - 1 for n in per_request.values())
    rows = verdict_rows(config)
    print(
        f"\nSIGKILL with {answered_before} of {REQUESTS} answered: requests {REQUESTS}, "
        f"lost {lost}, duplicated {duplicated} (uncommitted window {window} records), "
        f"time to recover {recovered_s:.1f} s; verdict events {sum(per_attempt.values())}, "
        f"rows raw {rows.raw}, unique {rows.unique} "
        "(ClickHouse folds duplicate keys on insert and in merges), "
        f"attempts implied {len(implied_attempts(responses))}"
    )
    assert lost == 0
    assert duplicated <= window
    assert answered_before < REQUESTS  # the kill did cut into the load
    implied = implied_attempts(responses)
    assert set(per_attempt) == implied  # the verdicts topic
    assert set(rows.per_key) == implied  # ClickHouse's raw rows, every attempt once or more
    assert {r.status for r in responses} == {"served"}
