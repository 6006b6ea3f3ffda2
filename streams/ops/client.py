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

from schemas.codec import decode_response
from schemas.events import Request, Response
from streams.config import FallbackConfig
from streams.kafka.client_options import kafka_client_options
from streams.kafka.topics import pipeline_topics

#: every ms the producer lingers is a ms of the caller's round trip
CLIENT_PRODUCER_LINGER_MS = 1


class FallbackClient:
    """Produces to `<prefix>requests` and reads `<prefix>responses`, deduped by request_id."""

    def __init__(self, config: FallbackConfig) -> None:
        self.options = kafka_client_options(config.kafka)
        self.topics = pipeline_topics(config)
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

    async def __aenter__(self) -> FallbackClient:
        await self.producer.start()
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
        partitions = consumer.partitions_for_topic(self.topics.responses)
        for _ in range(50):
            if partitions:
                break
            await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self.topics.responses)
        if only is not None:
            partitions = set(only) & set(partitions or ())
        tps = [TopicPartition(self.topics.responses, p) for p in sorted(partitions or [])]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        self.consumer = consumer

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
        delivery: asyncio.Future[Any] = await self.producer.send(
            self.topics.requests, body, key=request_id.encode()
        )
        return delivery

    async def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        await self.producer.send_and_wait(self.topics.requests, value, key=key)

    async def every_response(self, idle_timeout_s: float | None) -> AsyncIterator[Response]:
        """Yield every new response as it arrives, duplicates included, until
        `idle_timeout_s` of silence (None: for ever)."""
        if self.consumer is None:
            raise RuntimeError("call listen_from_now() before sending")
        deadline = None if idle_timeout_s is None else time.monotonic() + idle_timeout_s
        while deadline is None or time.monotonic() < deadline:
            batch = await self.consumer.getmany(timeout_ms=100)
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
