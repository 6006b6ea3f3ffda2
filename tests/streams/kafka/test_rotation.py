"""A generation is deleted only once it is read out: the check against the real
embedded broker, where ListOffsets falls short of a multi-record batch's end."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streams.kafka.rotation import read_out
from streams.ops.broker import EmbeddedBroker
from topics.catalog import RetentionHours, topic_catalog
from topics.declare import declare_topics
from topics.generations import catalog_at, generation_specs


async def test_a_generation_is_read_out_only_once_committed_to_its_high_watermark(
    broker: EmbeddedBroker,
) -> None:
    options = {"bootstrap_servers": broker.bootstrap_servers}
    catalog = topic_catalog(
        prefix=f"rot-{uuid.uuid4().hex[:6]}.",
        tiers=["only"],
        partitions=1,
        replication_factor=1,
        retention=RetentionHours(),
    )
    group = f"rot-{uuid.uuid4().hex[:6]}"
    await declare_topics(generation_specs(catalog, {7}), options)
    topics = [spec.name for spec in catalog_at(catalog, 7).specs if spec.rotates]
    assert await read_out(topics, options, group)  # empty: nothing to read

    requests = TopicPartition(catalog_at(catalog, 7).requests, 0)
    producer = AIOKafkaProducer(**options, linger_ms=50)
    await producer.start()
    try:
        # One batch of three records: ListOffsets would say the end is 1.
        sent = [await producer.send(requests.topic, b"r", partition=0) for _ in range(3)]
        await producer.flush()
        assert [(await delivery).offset for delivery in sent] == [0, 1, 2]
    finally:
        await producer.stop()

    committer = AIOKafkaConsumer(**options, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        assert not await read_out(topics, options, group)  # nothing committed
        committer.assign([requests])
        await committer.commit({requests: OffsetAndMetadata(1, "")})
        assert not await read_out(topics, options, group)  # two records unread
        await committer.commit({requests: OffsetAndMetadata(3, "")})
        assert await read_out(topics, options, group)
    finally:
        await committer.stop()
