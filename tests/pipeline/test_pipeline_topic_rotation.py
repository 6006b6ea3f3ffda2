"""Topic rotation, the embedded broker's retention (topics/generations.py): a
worker serving across several generations answers every request exactly once,
writes every verdict, and deletes each generation once it is read out."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config, scripted_tier
from tests.pipeline.harness import topic_generations
from topics.generations import generation_at

PERIOD_S = 3.0
GENERATIONS = 5


async def test_serving_across_generations_loses_and_repeats_nothing_and_old_ones_go(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    config = pipeline_config(
        broker,
        tmp_path,
        [scripted_tier("primary"), scripted_tier("local")],
        kafka={"topic_rotation_s": PERIOD_S},
    )
    async with harness_for(config, tmp_path) as harness:
        first = generation_at(time.time(), PERIOD_S)
        waiters = []
        attempts_expected = 0
        i = 0
        # Steady traffic while the generations turn over; every fifth request
        # falls back, so tier, attempts and verdict topics all carry records.
        while generation_at(time.time(), PERIOD_S) < first + GENERATIONS:
            fails = i % 5 == 0
            request = harness.new_request({"primary": "error"} if fails else None)
            waiters.append(await harness.send(request))
            attempts_expected += 2 if fails else 1
            i += 1
            await asyncio.sleep(0.02)
        await harness.client.producer.flush()
        responses = await asyncio.wait_for(asyncio.gather(*waiters), 60)
        await asyncio.sleep(1.0)  # a duplicate would have come by now
        print(f"\nrotation: {len(responses)} requests over {GENERATIONS} generations")

        assert {r.status for r in responses} == {"served"}
        assert sum(len(r.attempts) for r in responses) == attempts_expected
        counts = [harness.response_counts[r.request_id] for r in responses]
        assert max(counts) == 1, "a request was answered twice"
        # Following a new generation keeps the positions of the partitions
        # still read: nothing is read twice (the router would count it).
        stats = await asyncio.to_thread(harness.worker.get, "/stats/")
        assert stats["duplicates"] == 0

        left = await topic_generations(config)
        now = generation_at(time.time(), PERIOD_S)
        print(f"rotation: generations left {sorted(g - first for g in left)} (now {now - first})")
        # Each read-out generation went, none came back (Tansu makes a topic
        # whose metadata is asked for), and the next one is there in time.
        assert left <= {now - 1, now, now + 1}
        assert now in left

        rows = [json.loads(row) for row in harness.stored_rows_as_text(("verdicts",))]
        ids = {r.request_id for r in responses}
        assert len([row for row in rows if row["request_id"] in ids]) == attempts_expected
