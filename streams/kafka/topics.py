"""The pipeline's topic catalog for one config (topics/ itself takes plain values),
and the names producers use now (`TopicNames`)."""

from __future__ import annotations

import time

from streams.config import FallbackConfig
from topics.catalog import RetentionHours, TopicCatalog, topic_catalog
from topics.generations import catalog_at, generation_at


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
    """The topics to produce to now: the plain catalog, or with `kafka.topic_rotation_s`
    its current generation (streams/kafka/rotation.py switches it, once the
    generation's topics exist)."""

    def __init__(self, base: TopicCatalog, period_s: float | None) -> None:
        self.base = base
        self.period_s = period_s
        self.generation: int | None = None
        self.current = base
        if period_s is not None:
            self.switch_to(generation_at(time.time(), period_s))

    @classmethod
    def for_config(cls, config: FallbackConfig) -> TopicNames:
        return cls(pipeline_topics(config), config.kafka.topic_rotation_s)

    def switch_to(self, generation: int) -> None:
        self.generation = generation
        self.current = catalog_at(self.base, generation)
