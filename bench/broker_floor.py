"""The broker's own latency floor: figure 2's hops with no pipeline work in them.

A request crosses four topics (requests → tier → attempts → responses).  This
chain sends paced records through four topics of the same broker, relayed by
bare aiokafka consumers and producers with the worker's and client's settings
(fetch wait, linger) and no decoding, model or evaluation at all.  What it
measures is the least figure 2 could be on this broker and machine.

The three relays run in the bench process while the workers of figure 1 are
stopped; the broker's CPU is reported with the latencies (at ~1,000 msg/s it
was close to a whole core here: every hop is a produce and a fetch request).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.harness import PARTITIONS, quantile
from streams.app import WORKER_PRODUCER_LINGER_MS
from streams.config import KafkaConfig
from streams.ops.broker import EmbeddedBroker
from streams.ops.client import CLIENT_PRODUCER_LINGER_MS

#: requests, tier.<name>, attempts.<name>, responses
HOPS = 4


@dataclass
class FloorResult:
    rate: float
    p50_ms: float
    p99_ms: float
    received: int
    sent: int
    #: the broker's CPU while the records flowed, in cores (Linux /proc)
    broker_cores: float


async def broker_floor(broker: EmbeddedBroker, rate: float, seconds: float = 10.0) -> FloorResult:
    """Paced open loop through `HOPS` topics; latency = received - sent."""
    fetch_wait_ms = KafkaConfig().fetch_max_wait_ms
    servers = broker.bootstrap_servers
    run = uuid.uuid4().hex[:6]
    topics = [f"floor-{run}.{hop}" for hop in range(HOPS)]
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    finally:
        await admin.close()
    async with contextlib.AsyncExitStack() as stack:
        relays = []
        for source, target in itertools.pairwise(topics):
            consumer = await stack.enter_async_context(
                started_consumer(servers, source, f"floor-{run}-{source}", fetch_wait_ms)
            )
            producer = await stack.enter_async_context(
                started_producer(servers, WORKER_PRODUCER_LINGER_MS)
            )
            relays.append(asyncio.create_task(relay(consumer, producer, target)))
        sink = await stack.enter_async_context(
            started_consumer(servers, topics[-1], f"floor-{run}-sink", fetch_wait_ms)
        )
        source = await stack.enter_async_context(
            started_producer(servers, CLIENT_PRODUCER_LINGER_MS)
        )
        cpu_before, started = process_cpu_s(broker.process.pid), time.perf_counter()
        try:
            latencies, sent = await paced_through(source, topics[0], sink, rate, seconds)
            broker_cores = (process_cpu_s(broker.process.pid) - cpu_before) / (
                time.perf_counter() - started
            )
            return FloorResult(
                rate=rate,
                p50_ms=quantile(latencies, 0.5),
                p99_ms=quantile(latencies, 0.99),
                received=len(latencies),
                sent=sent,
                broker_cores=broker_cores,
            )
        finally:
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)


@contextlib.asynccontextmanager
async def started_consumer(
    servers: str, topic: str, group: str, fetch_wait_ms: int
) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=group,
        fetch_max_wait_ms=fetch_wait_ms,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        yield consumer
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def started_producer(servers: str, linger_ms: int) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=linger_ms, acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def relay(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, target: str) -> None:
    while True:
        batch = await consumer.getmany(timeout_ms=200, max_records=1000)
        for records in batch.values():
            for record in records:
                await producer.send(target, record.value, key=record.key)


async def paced_through(
    source: AIOKafkaProducer,
    topic: str,
    sink: AIOKafkaConsumer,
    rate: float,
    seconds: float,
) -> tuple[list[float], int]:
    """Latencies (ms) of the records that came through, and how many were sent."""
    count = max(int(rate * seconds), 1)
    latencies: list[float] = []

    async def receive() -> None:
        while len(latencies) < count:
            batch = await sink.getmany(timeout_ms=200, max_records=5000)
            now = time.perf_counter()
            for records in batch.values():
                latencies.extend((now - float(r.value or b"0")) * 1000 for r in records)

    receiving = asyncio.create_task(receive())
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await source.send(topic, str(time.perf_counter()).encode(), key=str(i).encode())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(receiving, timeout=30)
    return latencies, count


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
