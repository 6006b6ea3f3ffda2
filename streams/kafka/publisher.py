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

A refused send is retried through the project's one retry loop
(`schemas.backoff.retry_async`): a few tries, and only for errors aiokafka
marks `retriable` (a record over the producer's `max_request_size` never
is, so it fails at once instead of holding its stage for seconds).

A dead letter always fits: it carries the raw record whole when that fits
in one producer request, else a bounded prefix with the size and sha256 of
the whole (`DeadLetter.truncated`).  If even that cannot be delivered, a
minimal letter without the raw bytes is sent and counted
(`dead_letter_fallbacks`), so bad input never holds a partition.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from schemas.backoff import Backoff, is_retryable, retry_async
from schemas.codec import encode_avro, encode_json
from schemas.errors import FallbackError
from schemas.events import DeadLetter, Response
from streams.kafka.consumed_record import ConsumedRecord
from streams.kafka.topics import TopicNames
from streams.observability import tracing
from streams.observability.metrics import PrometheusMetrics
from topics.catalog import TopicCatalog

log = logging.getLogger(__name__)

#: tries of one send (the first included) for errors that say they are transient
SEND_MAX_TRIES = 5
#: full jitter under 0.1, 0.2, 0.4, 0.8 s: at most 1.5 s of waiting per send
SEND_BACKOFF = Backoff(initial_s=0.1, max_s=1.0)
#: Faust's (and so the worker producer's) default `producer_max_request_size`
DEFAULT_MAX_RECORD_BYTES = 1_000_000
#: room kept for the Kafka record and batch framing around key and value
RECORD_OVERHEAD_BYTES = 1024
#: raw bytes a dead letter keeps of a value / key that does not fit whole
DEAD_LETTER_VALUE_PREFIX_BYTES = 64 * 1024
DEAD_LETTER_KEY_PREFIX_BYTES = 1024
#: a dead letter's reason is cut to this many characters (a stage's error text is unbounded)
DEAD_LETTER_REASON_CHARS = 4000
#: ...and a fallback letter's to this many
FALLBACK_REASON_CHARS = 500


class PublishError(FallbackError):
    """The broker did not take a record after every retry.

    `retryable` says whether trying later may work (the broker was unreachable)
    or never will (the record is over the producer's `max_request_size`).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def send_retryable(exc: BaseException) -> bool:
    """Retry a send only when aiokafka says its error is transient.

    Faust's producer wraps aiokafka's errors in `ProducerSendError`, so the
    error's causes are asked too.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if is_retryable(seen):
            return True
        seen = seen.__cause__
    return False


@dataclass
class Publisher:
    producer: Any  # faust ProducerT; typed loosely because Faust's stubs are partial
    names: TopicNames
    response_format: str = "json"
    #: the producer's `max_request_size`: no record above it can be sent
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    send_backoff: Backoff = field(default=SEND_BACKOFF)
    send_max_tries: int = SEND_MAX_TRIES
    failed_deliveries: int = 0
    last_delivery_error: str | None = None
    #: dead letters that kept only a prefix of the raw record (it did not fit whole)
    dead_letters_truncated: int = 0
    #: dead letters that could not be delivered and were replaced by a minimal one
    dead_letter_fallbacks: int = 0

    @property
    def topics(self) -> TopicCatalog:
        """The topics to publish to now (their current generation, with rotation on)."""
        return self.names.current

    def track_topics(self, catalogs: list[TopicCatalog]) -> None:
        """After a topic rotation: keep the producer's metadata to these topics
        (the current generation's, and the previous one's, whose last records
        may still be on their way).  aiokafka asks for the metadata of every
        topic it ever sent to, and Tansu makes a deleted generation again on
        that request."""
        client = self.producer._producer.client  # Faust's aiokafka producer: no public handle
        client.set_topics(sorted({spec.name for catalog in catalogs for spec in catalog.specs}))

    def counters(self) -> dict[str, int]:
        return {
            "dead_letters_truncated": self.dead_letters_truncated,
            "dead_letter_fallbacks": self.dead_letter_fallbacks,
        }

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
        """Append to the producer's batch (retrying a transient refusal); do not wait."""
        delivery: asyncio.Future[Any] = await self._retrying(
            lambda: self._send(topic, key, value), f"send to {topic}"
        )
        delivery.add_done_callback(self._on_delivery)
        return delivery

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Send and wait for the broker's ack (both retried while the error is transient)."""

        async def send_and_wait() -> None:
            await (await self._send(topic, key, value))

        await self._retrying(send_and_wait, f"publish to {topic}", failed=f"deliver to {topic}")

    async def _retrying(
        self, operation: Callable[[], Awaitable[Any]], what: str, failed: str | None = None
    ) -> Any:
        """`operation`, retried while its error is transient; what still fails
        raises `PublishError` ("could not <failed, default what>: ...")."""
        try:
            return await retry_async(
                operation,
                self.send_backoff,
                max_tries=self.send_max_tries,
                what=what,
                logger=log,
                retryable=send_retryable,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise PublishError(
                f"could not {failed or what}: {exc}", retryable=send_retryable(exc)
            ) from exc

    async def _send(self, topic: str, key: str, value: bytes) -> Any:
        # Faust's ProducerT.send(topic, key, value, partition, timestamp, headers)
        return await self.producer.send(
            topic, key.encode(), value, None, None, tracing.kafka_headers()
        )

    async def enqueue_avro(self, topic: str, key: str, event: BaseModel) -> None:
        await self.enqueue(topic, key, encode_avro(event))

    async def respond(self, response: Response, topic: str | None = None) -> None:
        """The caller's answer, to `topic` or else the current responses topic."""
        body = encode_avro(response) if self.response_format == "avro" else encode_json(response)
        await self.enqueue(topic or self.topics.responses, response.request_id, body)
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
        """Send the raw record with where it came from and why it failed.

        Raises `PublishError` only when not even a minimal letter can be
        delivered (the broker is unreachable): the record then stays
        un-finished, like any record whose outputs could not be sent.
        """
        key = request_id or f"{record.topic}-{record.offset}"
        letter = self._fitting_letter(record, reason, error_type, stage, request_id, key)
        self.metrics.dead_lettered(stage, error_type)
        log.warning(
            "dead-lettered %s[%d]@%d at %s (%d bytes%s): %s",
            record.topic,
            record.partition,
            record.offset,
            stage,
            letter.value_bytes,
            ", prefix kept" if letter.truncated else "",
            letter.reason[:FALLBACK_REASON_CHARS],
        )
        try:
            await self.publish(self.topics.dlq, key, encode_json(letter))
            return
        except PublishError as exc:
            self.dead_letter_fallbacks += 1
            log.error(
                "dead letter for %s[%d]@%d not delivered (%s); sending a minimal one",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
        minimal = letter.model_copy(
            update={
                "key_b64": None,
                "value_b64": "",
                "truncated": True,
                "reason": letter.reason[:FALLBACK_REASON_CHARS],
            }
        )
        await self.publish(
            self.topics.dlq, key[:DEAD_LETTER_KEY_PREFIX_BYTES], encode_json(minimal)
        )

    def _fitting_letter(
        self,
        record: ConsumedRecord,
        reason: str,
        error_type: str,
        stage: str,
        request_id: str | None,
        key: str,
    ) -> DeadLetter:
        """The whole raw record if the letter fits in one producer request, else a prefix."""
        raw_key, raw_value = record.key, record.value
        whole = DeadLetter(
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key_b64=_b64(raw_key),
            key_bytes=len(raw_key) if raw_key is not None else None,
            value_b64=_b64(raw_value) or "",
            value_bytes=len(raw_value),
            value_sha256=hashlib.sha256(raw_value).hexdigest(),
            truncated=False,
            reason=reason[:DEAD_LETTER_REASON_CHARS],
            error_type=error_type,
            stage=stage,
            request_id=request_id,
        )
        room = self.max_record_bytes - RECORD_OVERHEAD_BYTES - len(key.encode())
        if len(encode_json(whole)) <= room:
            return whole
        self.dead_letters_truncated += 1
        return whole.model_copy(
            update={
                "key_b64": _b64(raw_key[:DEAD_LETTER_KEY_PREFIX_BYTES] if raw_key else raw_key),
                "value_b64": _b64(raw_value[:DEAD_LETTER_VALUE_PREFIX_BYTES]) or "",
                "truncated": True,
            }
        )


def _b64(raw: bytes | None) -> str | None:
    return base64.b64encode(raw).decode() if raw is not None else None
