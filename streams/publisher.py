"""Every write the agents make goes through `Publisher`: keyed, encoded, delivered.

`publish` returns only once the broker has the record, so an agent that acks
its input after publishing never commits past an output that was lost.
Transient send failures are retried here with backoff (one loop, one place).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from schemas.codec import encode_avro, encode_json
from schemas.errors import FallbackError
from schemas.events import DeadLetter, Response
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

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        delay = SEND_BACKOFF_S
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                pending = await self.producer.send(topic, key.encode(), value, None, None, None)
                await pending
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == SEND_ATTEMPTS:
                    raise PublishError(f"could not deliver to {topic}: {exc}") from exc
                log.warning("send to %s failed (%s), retry %d in %.1fs", topic, exc, attempt, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def publish_avro(self, topic: str, key: str, event: BaseModel) -> None:
        await self.publish(topic, key, encode_avro(event))

    async def respond(self, response: Response) -> None:
        await self.publish(self.topics.responses, response.request_id, encode_json(response))

    async def dead_letter(
        self,
        *,
        event: Any,
        reason: str,
        error_type: str,
        stage: str,
        request_id: str | None,
    ) -> None:
        """Send the raw event with where it came from and why it failed."""
        message = event.message
        raw_value = message.value if isinstance(message.value, bytes) else b""
        raw_key = message.key if isinstance(message.key, bytes) else None
        letter = DeadLetter(
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key_b64=base64.b64encode(raw_key).decode() if raw_key is not None else None,
            value_b64=base64.b64encode(raw_value).decode(),
            reason=reason,
            error_type=error_type,
            stage=stage,
            request_id=request_id,
        )
        log.warning(
            "dead-lettered %s[%d]@%d at %s: %s",
            message.topic,
            message.partition,
            message.offset,
            stage,
            reason,
        )
        await self.publish(
            self.topics.dlq, request_id or f"{message.topic}-{message.offset}", encode_json(letter)
        )
