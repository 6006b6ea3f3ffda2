"""Publisher in process, with a small stand-in for Faust's producer.

The stand-in behaves as Faust's aiokafka producer does where it matters here:
a record over `max_request_size` is refused at `send` with aiokafka's
non-retriable `MessageSizeTooLargeError` wrapped in Faust's
`ProducerSendError`; a send returns a future that the broker's ack resolves.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError

from schemas.backoff import Backoff
from schemas.codec import decode_avro
from schemas.events import DeadLetter, Response
from streams.kafka.consumed_record import ConsumedRecord
from streams.kafka.publisher import (
    DEAD_LETTER_VALUE_PREFIX_BYTES,
    Publisher,
    PublishError,
    send_retryable,
)
from streams.kafka.topics import TopicNames
from topics.catalog import RetentionHours, topic_catalog

TOPICS = topic_catalog(
    prefix="t.",
    tiers=["primary"],
    partitions=1,
    replication_factor=1,
    retention=RetentionHours(),
)
FAST = Backoff(initial_s=0.001, max_s=0.002)


@dataclass
class FakeProducer:
    max_request_size: int = 1_000_000
    #: the next sends refused with a transient connection error
    refuse_next: int = 0
    #: every send refused with a transient error (the broker is gone)
    down: bool = False
    #: the broker rejects (after accepting the send) records to this topic above this size
    broker_limit: dict[str, int] = field(default_factory=dict)
    tries: int = 0
    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    async def send(
        self, topic: str, key: bytes, value: bytes, partition: Any, timestamp: Any, headers: Any
    ) -> asyncio.Future[Any]:
        self.tries += 1
        if self.down or self.refuse_next > 0:
            self.refuse_next -= 1
            raise ProducerSendError("Error while sending") from KafkaConnectionError()
        if len(key) + len(value) > self.max_request_size:
            raise ProducerSendError("Error while sending") from MessageSizeTooLargeError()
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if len(value) > self.broker_limit.get(topic, len(value)):
            delivery.set_exception(MessageSizeTooLargeError("broker: record too large"))
        else:
            self.sent.append((topic, key, value))
            delivery.set_result(None)
        return delivery

    def letters(self) -> list[dict[str, Any]]:
        return [json.loads(v) for t, _, v in self.sent if t == TOPICS.dlq]


def publisher(producer: FakeProducer, **fields: Any) -> Publisher:
    return Publisher(producer=producer, names=TopicNames(TOPICS, None), send_backoff=FAST, **fields)


def record(value: bytes, key: bytes | None = b"k") -> ConsumedRecord:
    return ConsumedRecord(topic=TOPICS.requests, partition=1, offset=41, key=key, value=value)


async def dead_letter(pub: Publisher, rec: ConsumedRecord, reason: str = "bad") -> None:
    await pub.dead_letter(
        record=rec, reason=reason, error_type="EventTooLarge", stage="router", request_id="r"
    )


def test_only_errors_aiokafka_marks_retriable_are_retried_even_when_faust_wraps_them() -> None:
    assert send_retryable(KafkaConnectionError())
    wrapped = ProducerSendError("Error while sending")
    wrapped.__cause__ = KafkaConnectionError()
    assert send_retryable(wrapped)
    too_large = ProducerSendError("Error while sending")
    too_large.__cause__ = MessageSizeTooLargeError()
    assert not send_retryable(too_large) and not send_retryable(ValueError())


async def test_a_transient_refusal_is_retried_and_the_record_goes_out() -> None:
    producer = FakeProducer(refuse_next=2)
    pub = publisher(producer)
    delivery = await pub.enqueue(TOPICS.verdicts, "r1", b"v")
    await delivery
    assert producer.tries == 3 and producer.sent == [(TOPICS.verdicts, b"r1", b"v")]
    assert pub.delivery_problem() is None


async def test_retries_are_bounded() -> None:
    producer = FakeProducer(down=True)
    pub = publisher(producer, send_max_tries=4)
    with pytest.raises(PublishError, match="could not send") as caught:
        await pub.enqueue(TOPICS.verdicts, "r1", b"v")
    assert producer.tries == 4
    assert caught.value.retryable  # the broker may come back: replay, do not dead-letter


async def test_a_record_too_large_is_refused_at_once_not_retried() -> None:
    producer = FakeProducer(max_request_size=100)
    pub = publisher(producer)
    with pytest.raises(PublishError) as caught:
        await pub.enqueue(TOPICS.verdicts, "r1", b"x" * 200)
    assert producer.tries == 1
    assert not caught.value.retryable  # it never will fit: replaying it would freeze


async def test_a_failed_delivery_blocks_commits() -> None:
    producer = FakeProducer(broker_limit={TOPICS.verdicts: 10})
    pub = publisher(producer)
    delivery = await pub.enqueue(TOPICS.verdicts, "r1", b"x" * 20)
    with pytest.raises(MessageSizeTooLargeError):
        await delivery
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    problem = pub.delivery_problem()
    assert problem is not None and "1 record(s) not delivered" in problem


async def test_responses_are_encoded_as_configured() -> None:
    response = Response(request_id="r1", tenant="t", status="invalid", message="m")
    for response_format in ("json", "avro"):
        producer = FakeProducer()
        await publisher(producer, response_format=response_format).respond(response)
        [(topic, key, value)] = producer.sent
        assert (topic, key) == (TOPICS.responses, b"r1")
        decoded = (
            Response.model_validate_json(value)
            if response_format == "json"
            else decode_avro(Response, value)
        )
        assert decoded == response


async def test_a_dead_letter_that_fits_keeps_the_raw_record_whole() -> None:
    producer = FakeProducer()
    pub = publisher(producer)
    raw = b'{"request_id": "r", "bogus": 1}'
    await dead_letter(pub, record(raw))
    [letter] = producer.letters()
    assert base64.b64decode(letter["value_b64"]) == raw
    assert base64.b64decode(letter["key_b64"]) == b"k" and letter["key_bytes"] == 1
    assert letter["value_bytes"] == len(raw) and not letter["truncated"]
    assert letter["value_sha256"] == hashlib.sha256(raw).hexdigest()
    assert DeadLetter.model_validate(letter).offset == 41
    assert pub.counters() == {"dead_letters_truncated": 0, "dead_letter_fallbacks": 0}


async def test_a_dead_letter_too_large_for_one_request_keeps_a_prefix_size_and_digest() -> None:
    # 900 KB raw is 1.2 MB in base64: above the producer's 1 MB limit.
    producer = FakeProducer()
    pub = publisher(producer)
    raw = b'{"request_id": "r", "pad": "' + b"x" * 900_000 + b'"}'
    await dead_letter(pub, record(raw, key=b"K" * 5000), reason="why " * 10_000)
    [letter] = producer.letters()
    assert letter["truncated"] and letter["value_bytes"] == len(raw)
    assert letter["value_sha256"] == hashlib.sha256(raw).hexdigest()
    assert base64.b64decode(letter["value_b64"]) == raw[:DEAD_LETTER_VALUE_PREFIX_BYTES]
    assert letter["key_bytes"] == 5000 and len(base64.b64decode(letter["key_b64"])) == 1024
    assert len(letter["reason"]) <= 4000
    assert producer.tries == 1
    assert pub.counters()["dead_letters_truncated"] == 1


async def test_a_dead_letter_the_broker_refuses_falls_back_to_a_minimal_one() -> None:
    producer = FakeProducer(broker_limit={TOPICS.dlq: 600})
    pub = publisher(producer)
    await dead_letter(pub, record(b"y" * 2000))
    [letter] = producer.letters()
    assert letter["truncated"] and letter["value_b64"] == "" and letter["key_b64"] is None
    assert letter["value_bytes"] == 2000 and letter["reason"] == "bad"
    assert pub.counters()["dead_letter_fallbacks"] == 1
    assert pub.delivery_problem() is None  # publish waited: nothing pending failed


async def test_a_dead_letter_with_the_broker_gone_fails_in_bounded_time() -> None:
    producer = FakeProducer(down=True)
    pub = publisher(producer, send_max_tries=3)
    with pytest.raises(PublishError):
        await asyncio.wait_for(dead_letter(pub, record(b"z")), 5)
    assert producer.tries == 6  # the letter, then the minimal letter, 3 tries each
