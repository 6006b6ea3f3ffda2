"""What a run left behind, counted on raw records and raw rows.

Duplicates are what these tests look for, so nothing here deduplicates:
every response on the responses topic, every verdict on the verdicts topic,
and ClickHouse's verdict rows without FINAL (the table is a ReplacingMergeTree
on (request_id, attempt): FINAL, or a background merge, folds duplicates).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from analytics.backend import ChdbBackend
from schemas.codec import decode_avro, decode_response
from schemas.events import Response, Verdict
from streams.config import FallbackConfig
from streams.kafka.client_options import kafka_client_options
from streams.kafka.topics import pipeline_topics


async def read_from_start(
    config: FallbackConfig,
    topic: str,
    complete: Callable[[list[ConsumerRecord]], bool] = lambda records: True,
    idle_s: float = 2.0,
    timeout_s: float = 90.0,
) -> list[ConsumerRecord]:
    """Every record on `topic` from the beginning: read until `complete(records)`
    and then nothing new for `idle_s` (late duplicates), or `timeout_s`.

    Not up to the end offsets: the embedded broker's ListOffsets can report
    fewer records than a fetch returns (1,502 of 1,510 seen here)."""
    consumer = AIOKafkaConsumer(**kafka_client_options(config.kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        values: list[ConsumerRecord] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        idle_since = loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                values.extend(records)
            if batch:
                idle_since = loop.time()
            elif loop.time() - idle_since >= idle_s and complete(values):
                break
        return values
    finally:
        await consumer.stop()


async def all_responses(
    config: FallbackConfig, wanted: set[str], timeout_s: float = 90.0
) -> list[Response]:
    """Every response on the topic, once each of `wanted` has one and no more
    came for 2 s (or `timeout_s` passed)."""

    def decode(records: list[ConsumerRecord]) -> list[Response]:
        return [decode_response(r.value, config.worker.response_format) for r in records]

    def complete(records: list[ConsumerRecord]) -> bool:
        return wanted <= {r.key.decode() for r in records}

    topic = pipeline_topics(config).responses
    return decode(await read_from_start(config, topic, complete, timeout_s=timeout_s))


async def verdict_events(config: FallbackConfig) -> Counter[tuple[str, int]]:
    """Verdict records on the verdicts topic per (request_id, attempt)."""
    records = await read_from_start(config, pipeline_topics(config).verdicts)
    verdicts = [decode_avro(Verdict, r.value) for r in records]
    return Counter((v.request_id, v.attempt) for v in verdicts)


@dataclass(frozen=True)
class VerdictRows:
    #: raw rows per (request_id, attempt), read without FINAL
    per_key: Counter[tuple[str, int]]

    @property
    def raw(self) -> int:
        return sum(self.per_key.values())

    @property
    def unique(self) -> int:
        return len(self.per_key)


def verdict_rows(config: FallbackConfig) -> VerdictRows:
    """Open the chDB directory (no worker may hold it) and count raw rows."""
    analytics = config.analytics
    backend = ChdbBackend(analytics.chdb_path, analytics.database)
    try:
        rows = backend.query(
            f"SELECT request_id, attempt, count() AS n FROM {analytics.database}.verdicts "
            "GROUP BY request_id, attempt"
        )
        unique = backend.query(
            f"SELECT count() AS raw, uniqExact(request_id, attempt) AS keys "
            f"FROM {analytics.database}.verdicts"
        )[0]
    finally:
        backend.close()
    per_key = Counter({(r["request_id"], int(r["attempt"])): int(r["n"]) for r in rows})
    assert int(unique["raw"]) == sum(per_key.values()) and int(unique["keys"]) == len(per_key)
    return VerdictRows(per_key)


def implied_attempts(responses: list[Response]) -> set[tuple[str, int]]:
    """(request_id, attempt) for every attempt any response reports."""
    return {(r.request_id, a.attempt) for r in responses for a in r.attempts}


async def uncommitted_records(
    config: FallbackConfig, topic: str, committed: dict[int, int | None]
) -> int:
    """Records of `topic` at or after the group's committed offset per partition."""
    records = await read_from_start(config, topic, idle_s=1.0)
    return sum(1 for r in records if r.offset >= (committed.get(r.partition) or 0))
