"""Kafka client behaviour Faust does not expose: the fetch wait.

Faust hardcodes `fetch_max_wait_ms=1500` for its worker consumer; on a quiet
partition a new record then waits up to ~750 ms in the broker.  We set the
consumer's value from `kafka.fetch_max_wait_ms` right after Faust builds it,
before it starts (aiokafka reads it when the fetcher is created at start).
Faust's consumer reads the spend topic and the spend table's changelog; the
pipeline's stages have their own consumer (streams/kafka/stage_consumer.py).
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

_original_create_worker_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
_fetch_max_wait_ms: int | None = None


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    consumer = _original_create_worker_consumer(self, transport)
    if _fetch_max_wait_ms is not None:
        consumer._fetch_max_wait_ms = _fetch_max_wait_ms
    return consumer


def set_fetch_max_wait_ms(value: int) -> None:
    global _fetch_max_wait_ms
    _fetch_max_wait_ms = value
    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
