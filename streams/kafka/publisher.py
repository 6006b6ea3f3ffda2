"""Every write the stages make goes through `Publisher`: keyed, encoded, delivered.

Two ways to send:

- `enqueue` hands the record to the producer's batch and returns; the stage
  may then count its input finished.  At-least-once still holds because the
  stage consumer flushes the producer before every offset commit, and refuses
  to commit (crashing the worker instead) if any enqueued record failed
  delivery (`delivery_problem`, see streams/kafka/stage_consumer.py).
  Not parking a task per record until its broker ack doubled throughput in a
  prototype (about 280 to 530 req/s in the steady phase).
- `publish` waits for the broker's ack (dead letters, one-off sends).

Transient send failures are retried here with backoff (one loop, one place).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from schemas.codec import encode_avro, encode_json
from schemas.errors import FallbackError
from schemas.events import DeadLetter, Response
from streams.kafka.consumed_record import ConsumedRecord
from streams.observability import tracing
from streams.observability.metrics import PrometheusMetrics
from topics.catalog import TopicCatalog

log = logging.getLogger(__name__)

SEND_ATTEMPTS = 8


class PublishError(FallbackError):
    """The broker did not take a record after every retry; the input stays un-acked."""


SEND_BACKOFF_S = 0.1


@dataclass
class Publisher:
    producer: Any  # faust ProducerT; typed loosely because Faust's stubs are partial
    topics: TopicCatalog
    response_format: str = "json"
    failed_deliveries: int = 0
    last_delivery_error: str | None = None
    #: this worker's metrics: every final response and dead letter passes here
    metrics: PrometheusMetrics = field(default_factory=PrometheusMetrics)

    def delivery_problem(self) -> str | None:
        """Why offsets must not be committed, if an enqueued record was lost."""
        if not self.failed_deliveries:
            return None
        return f"{self.failed_deliveries} record(s) not delivered: {self.last_delivery_error}"

    def _on_delivery(self, delivery: asyncio.Future[Any]) -> None:
        error = "cancelled" if delivery.cancelled() else delivery.exception()
        if error is not None:
            self.failed_deliveries += 1
            self.last_delivery_error = str(error)
            log.error("delivery failed: %s", error)

    async def enqueue(self, topic: str, key: str, value: bytes) -> asyncio.Future[Any]:
        """Append to the producer's batch (retrying a refused append); do not wait."""
        delivery: asyncio.Future[Any] = await self._send(topic, key, value)
        delivery.add_done_callback(self._on_delivery)
        return delivery

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Send and wait for the broker's ack."""
        try:
            await (await self._send(topic, key, value))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise PublishError(f"could not deliver to {topic}: {exc}") from exc

    async def _send(self, topic: str, key: str, value: bytes) -> Any:
        delay = SEND_BACKOFF_S
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                return await self.producer.send(
                    topic, key.encode(), value, None, None, tracing.kafka_headers()
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == SEND_ATTEMPTS:
                    raise PublishError(f"could not deliver to {topic}: {exc}") from exc
                log.warning("send to %s failed (%s), retry %d in %.1fs", topic, exc, attempt, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def enqueue_avro(self, topic: str, key: str, event: BaseModel) -> None:
        await self.enqueue(topic, key, encode_avro(event))

    async def respond(self, response: Response) -> None:
        body = encode_avro(response) if self.response_format == "avro" else encode_json(response)
        await self.enqueue(self.topics.responses, response.request_id, body)
        self.metrics.responded(response)
        tracing.responded(response)

    async def dead_letter(
        self,
        *,
        record: ConsumedRecord,
        reason: str,
        error_type: str,
        stage: str,
        request_id: str | None,
    ) -> None:
        """Send the raw record with where it came from and why it failed."""
        letter = DeadLetter(
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key_b64=base64.b64encode(record.key).decode() if record.key is not None else None,
            value_b64=base64.b64encode(record.value).decode(),
            reason=reason,
            error_type=error_type,
            stage=stage,
            request_id=request_id,
        )
        log.warning(
            "dead-lettered %s[%d]@%d at %s: %s",
            record.topic,
            record.partition,
            record.offset,
            stage,
            reason,
        )
        await self.publish(
            self.topics.dlq, request_id or f"{record.topic}-{record.offset}", encode_json(letter)
        )
        self.metrics.dead_lettered(stage, error_type)
