"""Create every topic with explicit partitions before anything produces to it.

Tansu (and Kafka with auto-create on) would otherwise create a topic on first
use with its own partition count, breaking the keying by request_id.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from topics.catalog import TopicSpec

log = logging.getLogger(__name__)


def topic_configs(spec: TopicSpec) -> dict[str, str]:
    if spec.compacted:
        return {"cleanup.policy": "compact"}
    return {"retention.ms": str(spec.retention_ms)}


async def declare_topics(
    specs: tuple[TopicSpec, ...] | list[TopicSpec], client_options: dict[str, Any]
) -> dict[str, int]:
    """Create missing topics; return each topic's partition count as the broker reports it."""
    admin = AIOKafkaAdminClient(**client_options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        spec.name,
                        spec.partitions,
                        spec.replication_factor,
                        topic_configs=topic_configs(spec),
                    )
                    for spec in missing
                ]
            )
        described = await admin.describe_topics([spec.name for spec in specs])
    finally:
        await admin.close()
    partitions = {str(d["topic"]): len(d["partitions"]) for d in described}
    for spec in specs:
        found = partitions.get(spec.name, 0)
        if found != spec.partitions:
            log.warning(
                "topic %s has %d partitions, config asks for %d (existing topics are not altered)",
                spec.name,
                found,
                spec.partitions,
            )
    return partitions
