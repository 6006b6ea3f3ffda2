"""A caller's side of the contract: produce requests, read responses.

Used by `fallback send`, the demo and the tests; any Kafka client in any
language can do the same with plain JSON (see the README).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.cluster import ClusterMetadata

from schemas.codec import decode_response
from schemas.events import Request, Response
from streams.config import FallbackConfig
from streams.kafka.client_options import kafka_client_options
from streams.kafka.topics import TopicNames
from topics.catalog import TopicCatalog
from topics.generations import (
    catalog_at,
    existing_generations,
    generation_at,
    producing_generation,
    readable_generations,
)

#: every ms the producer lingers is a ms of the caller's round trip
CLIENT_PRODUCER_LINGER_MS = 1
#: with topic rotation, how often the reader looks for new and deleted generations
FOLLOW_GENERATIONS_S = 1.0


class FallbackClient:
    """Produces to `<prefix>requests` and reads `<prefix>responses`, deduped by request_id.

    With topic rotation (topics/generations.py; by default on the embedded
    broker) it produces to the newest generation and reads the responses of
    every generation that exists.  The names are known once it is entered."""

    def __init__(self, config: FallbackConfig) -> None:
        self.config = config
        self.options = kafka_client_options(config.kafka)
        self.names = TopicNames.for_config(config, embedded_broker=False)
        self.response_format = config.worker.response_format
        self.fetch_max_wait_ms = config.kafka.fetch_max_wait_ms
        # 512 KiB batches: with aiokafka's 16 KiB a fast sender waits for every
        # produce request in flight (the worker's producer is set the same way).
        self.producer = AIOKafkaProducer(
            **self.options,
            linger_ms=CLIENT_PRODUCER_LINGER_MS,
            acks="all",
            max_batch_size=512 * 1024,
        )
        self.consumer: AIOKafkaConsumer | None = None
        self._seen: set[str] = set()
        #: the responses partitions read (None: all); see `listen_from_now`
        self._only: set[int] | None = None
        self._followed_at = 0.0
        self._followed_generation: int | None = None

    @property
    def topics(self) -> TopicCatalog:
        """The topics to produce to and read now (their current generation with rotation)."""
        return self.names.current

    async def __aenter__(self) -> FallbackClient:
        await self.producer.start()
        self.names = await TopicNames.agreed(self.config, self.options)
        if self.names.period_s is not None:
            await self.follow_generations()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()
        if self.consumer is not None:
            await self.consumer.stop()

    async def listen_from_now(self, only: Collection[int] | None = None) -> None:
        """Start reading responses from the current end (call before sending);
        with `only`, just those partitions of the responses topic."""
        consumer = AIOKafkaConsumer(
            **self.options, enable_auto_commit=False, fetch_max_wait_ms=self.fetch_max_wait_ms
        )
        await consumer.start()
        self._only = None if only is None else set(only)
        tps: list[TopicPartition] = []
        for _ in range(50):
            tps = self._responses_partitions(await self.producer.client.fetch_all_metadata())
            if tps:
                break
            await asyncio.sleep(0.1)
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        self.consumer = consumer
        self._followed_at = time.monotonic()

    def _responses_partitions(self, cluster: ClusterMetadata) -> list[TopicPartition]:
        """The responses partitions to read: of every generation there is, with rotation."""
        names = [self.topics.responses]
        if self.names.period_s is not None:
            base = self.names.base
            existing = existing_generations(base, set(cluster.topics()))
            readable = readable_generations(existing, time.time(), self.names.period_s)
            readable |= set(sorted(existing)[-1:])  # the newest, whatever the clock says
            names = [catalog_at(base, g).responses for g in readable]
        return [
            TopicPartition(name, p)
            for name in sorted(names)
            for p in sorted(cluster.partitions_for_topic(name) or ())
            if self._only is None or p in self._only
        ]

    async def follow_generations(self) -> None:
        """Produce to the newest generation; read responses from new ones, from
        their start, and stop reading deleted ones (topic rotation only)."""
        assert self.names.period_s is not None
        now = generation_at(time.time(), self.names.period_s)
        self._followed_at = time.monotonic()
        self._followed_generation = now
        cluster = await self.producer.client.fetch_all_metadata()
        base = self.names.base
        producing = producing_generation(now, existing_generations(base, set(cluster.topics())))
        if producing is not None and producing != self.names.generation:
            previous = self.topics.requests
            self.names.switch_to(producing)
            # aiokafka asks for the metadata of every topic it ever sent to, and
            # Tansu makes a deleted one again: track this one and the last only.
            self.producer.client.set_topics([self.topics.requests, previous])
        consumer = self.consumer
        if consumer is None:
            return
        wanted = self._responses_partitions(cluster)
        assigned = consumer.assignment()
        if set(wanted) == assigned:
            return
        # assign() forgets positions: keep those of partitions still read.
        kept = {tp: await consumer.position(tp) for tp in assigned if tp in wanted}
        consumer.assign(wanted)
        for tp in wanted:
            if tp in kept:
                consumer.seek(tp, kept[tp])
            else:
                await consumer.seek_to_beginning(tp)

    async def _follow_if_due(self) -> None:
        if self.names.period_s is None:
            return
        due = time.monotonic() - self._followed_at >= FOLLOW_GENERATIONS_S
        moved = generation_at(time.time(), self.names.period_s) != self._followed_generation
        if due or moved:
            await self.follow_generations()

    async def read_batch(
        self, timeout_ms: int, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        """One fetch of responses (following generations first, with rotation)."""
        if self.consumer is None:
            raise RuntimeError("call listen_from_now() before reading")
        await self._follow_if_due()
        return await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)

    def generations_read(self) -> int:
        """How many responses topics the reader holds (generations, with rotation)."""
        consumer = self.consumer
        return len({tp.topic for tp in consumer.assignment()}) if consumer is not None else 0

    async def send(self, request: Request | dict[str, Any]) -> asyncio.Future[Any]:
        """Enqueue the request; the returned future is its delivery (the broker's ack)."""
        body = (
            request.model_dump_json().encode()
            if isinstance(request, Request)
            else json.dumps(request).encode()
        )
        request_id = (
            request.request_id if isinstance(request, Request) else str(request.get("request_id"))
        )
        await self._follow_if_due()
        delivery: asyncio.Future[Any] = await self.producer.send(
            self.topics.requests, body, key=request_id.encode()
        )
        return delivery

    async def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        await self._follow_if_due()
        await self.producer.send_and_wait(self.topics.requests, value, key=key)

    async def every_response(self, idle_timeout_s: float | None) -> AsyncIterator[Response]:
        """Yield every new response as it arrives, duplicates included, until
        `idle_timeout_s` of silence (None: for ever)."""
        if self.consumer is None:
            raise RuntimeError("call listen_from_now() before sending")
        deadline = None if idle_timeout_s is None else time.monotonic() + idle_timeout_s
        while deadline is None or time.monotonic() < deadline:
            batch = await self.read_batch(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    if idle_timeout_s is not None:
                        deadline = time.monotonic() + idle_timeout_s
                    yield decode_response(record.value, self.response_format)

    async def responses(self, timeout_s: float) -> AsyncIterator[Response]:
        """Yield new responses (first one per request_id only) until `timeout_s` of silence."""
        async for response in self.every_response(timeout_s):
            if response.request_id in self._seen:
                continue
            self._seen.add(response.request_id)
            yield response

    async def collect(self, request_ids: set[str], timeout_s: float) -> dict[str, Response]:
        """Wait for one response per id (or until `timeout_s` passes without progress)."""
        found: dict[str, Response] = {}
        async for response in self.responses(timeout_s):
            if response.request_id in request_ids:
                found[response.request_id] = response
                if len(found) == len(request_ids):
                    break
        return found
