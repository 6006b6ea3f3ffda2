"""ReplicatedTable against the real embedded broker: catch-up, follow, repeats, bad records."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.kafka.consumed_record import ConsumedRecord
from streams.ops.broker import EmbeddedBroker
from streams.state.replicated_table import ReplicatedTable, TableFold
from topics.catalog import TopicSpec
from topics.declare import declare_topics

pytestmark = pytest.mark.asyncio(loop_scope="session")

Counts = ReplicatedTable[dict[str, Any], str, int]


def counting_fold(watch: list[Any] | None = None) -> TableFold[dict[str, Any], str, int]:
    """Events {"id": ..., "key": ..., "n": ...}: add n to key, once per id.
    With `watch` = [table]: keys folded after the table said it was caught up
    are appended to it."""

    def apply(table: dict[str, int], event: dict[str, Any]) -> None:
        if watch and watch[0].caught_up:
            watch.append(event["key"])
        table[event["key"]] = table.get(event["key"], 0) + event["n"]

    def decode(record: ConsumedRecord) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(record.value)
        return event

    return TableFold(decode=decode, apply=apply, event_id=lambda event: event["id"])


async def new_topic(broker: EmbeddedBroker, partitions: int = 1) -> str:
    name = f"table-{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(name, partitions, 1, 3_600_000, "test table")
    await declare_topics([spec], {"bootstrap_servers": broker.bootstrap_servers})
    return name


def event(key: str, n: int = 1, event_id: str | None = None) -> bytes:
    return json.dumps({"id": event_id or uuid.uuid4().hex, "key": key, "n": n}).encode()


@pytest_asyncio.fixture(loop_scope="session")
async def producer(broker: EmbeddedBroker) -> AsyncIterator[AIOKafkaProducer]:
    # A long linger puts many records in one batch: the case Tansu's end offset gets wrong.
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=50)
    await producer.start()
    yield producer
    await producer.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def tables(broker: EmbeddedBroker) -> AsyncIterator[list[Counts]]:
    started: list[Counts] = []
    yield started
    for table in started:
        await table.stop()


async def start_table(
    broker: EmbeddedBroker,
    topic: str,
    tables: list[Counts],
    max_records: int = 1000,
    fold: TableFold[dict[str, Any], str, int] | None = None,
) -> Counts:
    table: Counts = ReplicatedTable(
        name="counts",
        topic=topic,
        fold=fold or counting_fold(),
        consumer_options={"bootstrap_servers": broker.bootstrap_servers},
        max_records=max_records,
    )
    tables.append(table)
    await table.start()
    return table


async def send_batch(producer: AIOKafkaProducer, topic: str, values: list[bytes]) -> None:
    deliveries = [await producer.send(topic, value) for value in values]
    await producer.flush()
    await asyncio.gather(*deliveries)


async def test_caught_up_means_every_record_folded_in_although_end_offsets_lag(
    broker: EmbeddedBroker, producer: AIOKafkaProducer, tables: list[Counts]
) -> None:
    topic = await new_topic(broker)
    for _ in range(3):
        await send_batch(producer, topic, [event("old") for _ in range(5)])

    # The trap the table avoids: Tansu's ListOffsets(LATEST) under-reports the end.
    probe = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    await probe.start()
    try:
        end = (await probe.end_offsets([TopicPartition(topic, 0)]))[TopicPartition(topic, 0)]
    finally:
        await probe.stop()
    print(f"15 records stored; ListOffsets(LATEST) says the end is {end}")

    # Four records a round: the read takes several rounds, ending inside a batch.
    watch: list[Any] = []
    table = await start_table(broker, topic, tables, max_records=4, fold=counting_fold(watch))
    watch.append(table)  # before the first fetch round returns
    await asyncio.wait_for(table.wait_caught_up(), 20)
    await send_batch(producer, topic, [event("new")])
    async with asyncio.timeout(20):
        while table.get("new", 0) != 1:
            await asyncio.sleep(0.05)
    assert table.get("old", 0) == 15
    assert watch[1:] == ["new"]  # every old record was in before it said caught up
    assert table.progress()["partitions"]["0"] == {"highwater": 16, "position": 16}


async def test_an_empty_topic_is_caught_up_and_later_events_are_followed(
    broker: EmbeddedBroker, producer: AIOKafkaProducer, tables: list[Counts]
) -> None:
    topic = await new_topic(broker, partitions=2)
    table = await start_table(broker, topic, tables)
    await asyncio.wait_for(table.wait_caught_up(), 20)
    assert len(table) == 0

    await send_batch(producer, topic, [event("x", 2), event("y", 3), event("x", 4)])
    async with asyncio.timeout(20):
        while dict(table.items()) != {"x": 6, "y": 3}:
            await asyncio.sleep(0.05)


async def test_two_copies_agree_and_a_repeated_event_counts_once(
    broker: EmbeddedBroker, producer: AIOKafkaProducer, tables: list[Counts]
) -> None:
    topic = await new_topic(broker)
    once = event("k", 10, event_id="same")
    await send_batch(producer, topic, [once, event("k", 1), once])
    first = await start_table(broker, topic, tables)
    second = await start_table(broker, topic, tables)
    await asyncio.wait_for(asyncio.gather(first.wait_caught_up(), second.wait_caught_up()), 20)
    assert first.get("k", 0) == second.get("k", 0) == 11
    assert first.counters.duplicates == 1

    # One copy stopping (a worker leaving) changes nothing for the other.
    await first.stop()
    await send_batch(producer, topic, [event("k", 100)])
    async with asyncio.timeout(20):
        while second.get("k", 0) != 111:
            await asyncio.sleep(0.05)


async def test_an_unreadable_record_is_skipped_and_counted_and_reading_goes_on(
    broker: EmbeddedBroker, producer: AIOKafkaProducer, tables: list[Counts]
) -> None:
    topic = await new_topic(broker)
    await send_batch(producer, topic, [event("k", 1), b"\xff not json", event("k", 2)])
    table = await start_table(broker, topic, tables)
    await asyncio.wait_for(table.wait_caught_up(), 20)
    assert table.get("k", 0) == 3
    assert table.counters.unreadable == 1 and table.counters.folded == 2
