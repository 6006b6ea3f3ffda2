"""The pipeline's topic catalog for one config (topics/ itself takes plain values),
and the names producers use now (`TopicNames`)."""

from __future__ import annotations

import time
from typing import Any

from streams.config import FallbackConfig
from streams.kafka.cluster import broker_is_embedded
from topics.catalog import RetentionHours, TopicCatalog, topic_catalog
from topics.generations import catalog_at, generation_at, split_generation


def pipeline_topics(config: FallbackConfig) -> TopicCatalog:
    """The plain names: what stages subscribe by, and the topics without rotation."""
    kafka = config.kafka
    retention = kafka.retention
    return topic_catalog(
        prefix=kafka.topic_prefix,
        tiers=[tier.name for tier in config.tiers],
        partitions=kafka.partitions,
        replication_factor=kafka.replication_factor,
        retention=RetentionHours(
            requests=retention.requests_hours,
            internal=retention.internal_hours,
            responses=retention.responses_hours,
            dlq=retention.dlq_hours,
        ),
    )


class TopicNames:
    """The topics to produce to now: the plain catalog, or with topic rotation
    (`KafkaConfig.rotation_period`) its current generation
    (streams/kafka/rotation.py switches it, once the generation's topics exist)."""

    def __init__(self, base: TopicCatalog, period_s: float | None) -> None:
        self.base = base
        self.period_s = period_s
        self.generation: int | None = None
        self.current = base
        if period_s is not None:
            self.switch_to(generation_at(time.time(), period_s))

    @classmethod
    def for_config(cls, config: FallbackConfig, embedded_broker: bool) -> TopicNames:
        return cls(pipeline_topics(config), config.kafka.rotation_period(embedded_broker))

    @classmethod
    async def agreed(cls, config: FallbackConfig, client_options: dict[str, Any]) -> TopicNames:
        """The names the workers use: the broker is asked whether it is the
        embedded one only when `kafka.topic_rotation_s` is left to its default."""
        kafka = config.kafka
        embedded = kafka.topic_rotation_s is None and await broker_is_embedded(client_options)
        return cls.for_config(config, embedded)

    def reply_topic(self, request_topic: str) -> str | None:
        """Where the response to a request read from `request_topic` goes, when not
        to the current responses topic: with rotation, a request produced to the
        plain name is answered on the plain name (callers that know nothing of
        generations read there)."""
        if self.period_s is not None and split_generation(request_topic)[1] is None:
            return self.base.responses
        return None

    def switch_to(self, generation: int) -> None:
        self.generation = generation
        self.current = catalog_at(self.base, generation)
