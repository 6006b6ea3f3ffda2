"""The gateway's Kafka side: one producer for requests, one reader for the
responses on this replica's partitions (see request_ids.py for why those are
the only ones its calls' responses can land on).

Built on the callers' client (`streams/ops/client.py`): the same producer
settings, the same JSON on the wire.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from schemas.backoff import Backoff, retry_async
from schemas.errors import FallbackError
from schemas.events import Request
from streams.config import FallbackConfig
from streams.gateway.request_ids import RequestIdMinter, owned_partitions
from streams.gateway.response_waiters import Arrival, ResponseWaiters
from streams.kafka.client_options import kafka_client_options
from streams.ops.client import FallbackClient
from topics.declare import declare_topics

log = logging.getLogger(__name__)

READ_BACKOFF = Backoff(initial_s=0.1, max_s=5.0)


class KafkaUnreachable(FallbackError):
    """The gateway could not start its Kafka side (start-up fails with this)."""


class NotQueued(FallbackError):
    """The broker did not take the request."""


class DeadlinePassed(FallbackError):
    """No response before the call's deadline."""


@dataclass(frozen=True)
class LinkState:
    partitions: int
    owned: tuple[int, ...]


class PipelineLink:
    def __init__(self, config: FallbackConfig) -> None:
        assert config.gateway is not None
        self.config = config
        self.gateway = config.gateway
        self._client: FallbackClient | None = None  # made in start(): aiokafka wants the loop
        self.waiters = ResponseWaiters(config.worker.response_format)
        self.state: LinkState | None = None
        self.minter: RequestIdMinter | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except KafkaError as exc:
            await self.stop()
            servers = self.config.kafka.bootstrap_servers
            raise KafkaUnreachable(f"cannot start on Kafka at {servers}: {exc}") from exc

    async def _start(self) -> None:
        # Declared here too: a gateway may start before any worker, and Tansu
        # (or Kafka with auto-create) would make the topics with its own counts.
        # (With topic rotation: this generation's; workers make the next ones.)
        self._client = FallbackClient(self.config)
        await self.client.__aenter__()
        topics = self.client.topics
        wanted = [s for s in topics.specs if s.name in (topics.requests, topics.responses)]
        await declare_topics(wanted, kafka_client_options(self.config.kafka))
        responses = self.client.topics.responses
        partitions = len(await self.client.producer.partitions_for(responses))
        owned = owned_partitions(self.gateway.replica_index, self.gateway.replica_count, partitions)
        self.minter = RequestIdMinter(self.gateway.replica_index, partitions, owned)
        await self.client.listen_from_now(owned)
        self.state = LinkState(partitions, owned)
        self._reader = asyncio.create_task(self._read_responses(), name="gateway-responses")
        self._reader.add_done_callback(self._reader_ended)
        log.info("gateway reads partitions %s of %d of %s", owned, partitions, responses)

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    @property
    def client(self) -> FallbackClient:
        assert self._client is not None, "start() first"
        return self._client

    @property
    def reading(self) -> bool:
        return self._reader is not None and not self._reader.done()

    def new_request_id(self) -> str:
        assert self.minter is not None, "start() first"
        return self.minter.new()

    async def call(self, request: Request, wait_s: float) -> Arrival:
        """Send `request` and wait at most `wait_s` for its response."""
        waiter = self.waiters.expect(request.request_id)
        try:
            async with asyncio.timeout(wait_s):
                delivery = await self.client.send(request)
                done, _ = await asyncio.wait({waiter, delivery}, return_when="FIRST_COMPLETED")
                if waiter not in done and delivery.exception() is not None:
                    log.error(
                        "request %s not delivered: %s", request.request_id, delivery.exception()
                    )
                    raise NotQueued(request.request_id)
                return await waiter
        except TimeoutError:
            raise DeadlinePassed(request.request_id) from None
        finally:
            if not waiter.done() or waiter.cancelled():
                self.waiters.leave(request.request_id)

    @staticmethod
    def _reader_ended(reader: asyncio.Task[None]) -> None:
        if not reader.cancelled() and reader.exception() is not None:
            # /health turns 503 and every waiting call meets its deadline.
            log.error("the response reader stopped: %r", reader.exception())

    async def _read_responses(self) -> None:
        while True:
            batch = await retry_async(
                lambda: self.client.read_batch(timeout_ms=1000),
                READ_BACKOFF,
                max_tries=None,
                what="reading responses",
                logger=log,
            )
            for records in batch.values():
                for record in records:
                    self.waiters.deliver(record.key, record.value)
