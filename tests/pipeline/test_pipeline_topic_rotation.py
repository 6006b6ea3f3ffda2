"""Topic rotation, the embedded broker's retention (topics/generations.py): a
worker serving across several generations answers every request exactly once,
writes every verdict, and deletes each generation once it is read out.  It is
the embedded broker's default, and callers on the plain names are still served."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.codec import decode_response
from schemas.events import Response
from streams.config.models import EMBEDDED_TOPIC_ROTATION_S
from streams.kafka.client_options import kafka_client_options
from streams.kafka.topics import pipeline_topics
from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config, scripted_tier
from tests.pipeline.harness import generations_after_a_prepare
from topics.generations import generation_at, split_generation

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

        left, now = await generations_after_a_prepare(config)
        print(f"rotation: generations left {sorted(g - first for g in left)} (now {now - first})")
        # Each read-out generation went, none came back (Tansu makes a topic
        # whose metadata is asked for), and the next one is there in time.
        assert {now, now + 1} <= left <= {now - 1, now, now + 1}

        rows = [json.loads(row) for row in harness.stored_rows_as_text(("verdicts",))]
        ids = {r.request_id for r in responses}
        assert len([row for row in rows if row["request_id"] in ids]) == attempts_expected


async def test_by_default_the_embedded_broker_rotates_and_the_plain_names_still_serve(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """`kafka.topic_rotation_s` left to its default: the worker and the client
    agree on rotating topics, and a raw Kafka client that knows nothing of
    generations, producing to the plain requests topic, is answered on the
    plain responses topic, before and after a rotation."""
    period = EMBEDDED_TOPIC_ROTATION_S
    config = pipeline_config(
        broker,
        tmp_path,
        [scripted_tier("primary"), scripted_tier("local")],
        kafka={"topic_rotation_s": None},
    )
    plain = pipeline_topics(config)
    options = kafka_client_options(config.kafka)
    async with harness_for(config, tmp_path) as harness:
        assert f"topics rotate every {period:g} s" in harness.worker.log_path.read_text()
        assert split_generation(harness.client.topics.requests)[1] is not None
        producer = AIOKafkaProducer(**options)
        reader = AIOKafkaConsumer(**options, enable_auto_commit=False)
        await producer.start()
        await reader.start()
        try:
            partitions = reader.partitions_for_topic(plain.responses) or set()
            tps = [TopicPartition(plain.responses, p) for p in sorted(partitions)]
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            first = generation_at(time.time(), period)
            plain_attempts: dict[str, int] = {}
            waiters = []
            i = 0
            # Both kinds of caller until a second into the next generation;
            # every third request falls back, so reply_to crosses two tiers.
            while time.time() < (first + 1) * period + 1.0:
                script = {"primary": "error"} if i % 3 == 0 else None
                raw = harness.new_request(script)
                await producer.send(
                    plain.requests, raw.model_dump_json().encode(), key=raw.request_id.encode()
                )
                plain_attempts[raw.request_id] = 2 if script else 1
                waiters.append(await harness.send(harness.new_request(script)))
                i += 1
                await asyncio.sleep(0.1)
            await producer.flush()
            await harness.client.producer.flush()
            rotated = await asyncio.wait_for(asyncio.gather(*waiters), 60)
            on_plain = await read_responses(reader, set(plain_attempts), timeout_s=60)
        finally:
            await producer.stop()
            await reader.stop()
        print(f"\ndefault rotation: {len(on_plain)} requests on plain names, {len(rotated)} not")

        assert {r.status for r in rotated} == {"served"}
        assert sorted(r.request_id for r in on_plain) == sorted(plain_attempts)
        assert {r.status for r in on_plain} == {"served"}
        assert all(len(r.attempts) == plain_attempts[r.request_id] for r in on_plain)
        # Each answered where its request came from, and nowhere else.
        assert not set(plain_attempts) & set(harness.responses)
        assert max(harness.response_counts.values()) == 1

        rows = [json.loads(row) for row in harness.stored_rows_as_text(("responses",))]
        stored = [row["request_id"] for row in rows]
        # The sink reads the plain responses topic too.
        assert sorted(i for i in stored if i in plain_attempts) == sorted(plain_attempts)


async def read_responses(
    reader: AIOKafkaConsumer, request_ids: set[str], timeout_s: float
) -> list[Response]:
    """Every response `reader` gets until one has come for each of `request_ids`."""
    found: list[Response] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not request_ids <= {r.request_id for r in found}:
        batch = await reader.getmany(timeout_ms=200)
        found += [decode_response(m.value, "json") for part in batch.values() for m in part]
    return found
