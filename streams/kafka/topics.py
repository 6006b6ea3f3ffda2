"""The pipeline's topic catalog for one config (topics/ itself takes plain values)."""

from __future__ import annotations

from streams.config import FallbackConfig
from topics.catalog import RetentionHours, TopicCatalog, topic_catalog


def pipeline_topics(config: FallbackConfig) -> TopicCatalog:
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
