"""Drive a real worker process through Kafka like a caller does, for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from analytics.backend import ChdbBackend
from schemas.events import Request, Response
from streams.app import stage_group_id
from streams.config import FallbackConfig
from streams.kafka.client_options import kafka_client_options
from streams.kafka.topics import pipeline_topics
from streams.ops.client import FallbackClient
from streams.ops.worker_process import WorkerProcess
from topics.generations import PREPARE_AT, existing_generations, generation_at

_ids = itertools.count(1)


class PipelineHarness:
    """Sends requests, keeps every response (and how often each came), reads other topics."""

    def __init__(self, config: FallbackConfig, worker: WorkerProcess) -> None:
        self.config = config
        self.worker = worker
        self.client = FallbackClient(config)
        self.responses: dict[str, Response] = {}
        self.response_counts: Counter[str] = Counter()
        self._waiters: dict[str, asyncio.Future[Response]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._client_open = contextlib.AsyncExitStack()

    async def start(self) -> None:
        await self._client_open.enter_async_context(self.client)
        await self.client.listen_from_now()
        self._reader = asyncio.create_task(self._read_responses())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self._client_open.aclose()

    async def _read_responses(self) -> None:
        """Every response, duplicates counted (the client's own `responses` dedupes)."""
        async for response in self.client.every_response(idle_timeout_s=None):
            self.response_counts[response.request_id] += 1
            self.responses.setdefault(response.request_id, response)
            waiter = self._waiters.pop(response.request_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(response)

    def new_request(self, script: dict[str, str] | None = None, **fields: Any) -> Request:
        request_id = fields.pop("request_id", None) or f"req-{next(_ids)}"
        payload = fields.pop("input", None) or {}
        if script:
            payload = {**payload, "script": script}
        return Request(request_id=request_id, input=payload, **fields)

    def expect(self, request_id: str) -> asyncio.Future[Response]:
        """A future for the first response to `request_id` (sent by anyone)."""
        if request_id in self._waiters:
            return self._waiters[request_id]
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        if request_id in self.responses:
            waiter.set_result(self.responses[request_id])
        else:
            self._waiters[request_id] = waiter
        return waiter

    async def send(self, request: Request) -> asyncio.Future[Response]:
        waiter = self.expect(request.request_id)
        await self.client.send(request)
        return waiter

    async def ask(
        self, script: dict[str, str] | None = None, timeout_s: float = 30.0, **fields: Any
    ) -> Response:
        request = self.new_request(script, **fields)
        waiter = await self.send(request)
        await self.client.producer.flush()
        return await asyncio.wait_for(waiter, timeout_s)

    async def ask_many(self, requests: list[Request], timeout_s: float = 60.0) -> list[Response]:
        waiters = [await self.send(r) for r in requests]
        await self.client.producer.flush()
        return list(await asyncio.wait_for(asyncio.gather(*waiters), timeout_s))

    async def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        await self.client.send_raw(value, key)

    async def read_topic(self, topic: str, until: int, timeout_s: float = 20.0) -> list[Any]:
        """Every record of `topic` from the beginning, once at least `until` are there."""
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self.config.kafka), enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            records: list[Any] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while loop.time() < deadline and len(records) < until:
                batch = await consumer.getmany(timeout_ms=200)
                for part in batch.values():
                    records.extend(part)
            return records
        finally:
            await consumer.stop()

    async def dead_letters(self, until: int) -> list[dict[str, Any]]:
        records = await self.read_topic(self.client.topics.dlq, until)
        return [json.loads(r.value) for r in records]

    async def committed_offsets(self, topic: str) -> dict[int, int | None]:
        """The worker group's committed offsets (read without joining the group)."""
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self.config.kafka),
            group_id=stage_group_id(self.config),
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            return {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}
        finally:
            await consumer.stop()

    def stored_rows_as_text(self, tables: tuple[str, ...] = ("verdicts", "responses")) -> list[str]:
        """Stop the worker (it holds chDB), then every row of `tables` as JSON text."""
        self.worker.stop()
        analytics = self.config.analytics
        backend = ChdbBackend(analytics.chdb_path, analytics.database)
        try:
            return [
                json.dumps(row, default=str)
                for table in tables
                for row in backend.query(f"SELECT * FROM {analytics.database}.{table}")
            ]
        finally:
            backend.close()


async def generations_after_a_prepare(config: FallbackConfig) -> tuple[set[int], int]:
    """The generations there are after the current period's prepare has deleted
    what it deletes (or at the period's end), and the current one.  By then a
    generation older than the previous one was closed for over a period, and
    read out (streams/kafka/rotation.py deletes what a round found read out at
    the next prepare)."""
    period = config.kafka.topic_rotation_s
    assert period, "for rotating topics"
    now = generation_at(time.time(), period)
    await asyncio.sleep(max((now + PREPARE_AT) * period - time.time(), 0.0))
    while True:
        left = await topic_generations(config)
        settled = {now, now + 1} <= left <= {now - 1, now, now + 1}
        if settled or time.time() > (now + 1) * period - 0.1:
            return left, now
        await asyncio.sleep(0.05)


async def topic_generations(config: FallbackConfig) -> set[int]:
    """The generations of the config's rotating topics that exist on the broker."""
    admin = AIOKafkaAdminClient(**kafka_client_options(config.kafka))
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    return existing_generations(pipeline_topics(config), topics)


def triggers(response: Response) -> list[tuple[str, str | None]]:
    """(tier, trigger) per attempt, in order: the fallback path at a glance."""
    return [(a.tier, a.trigger.value if a.trigger else None) for a in response.attempts]
