"""Which broker this is: the embedded one (`fallback broker`) gets other defaults
(shorter group timings, topic rotation), so workers and callers must agree on it.

The embedded broker is started with its own cluster id; any other broker is
taken for real Kafka (or Redpanda)."""

from __future__ import annotations

from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

#: the cluster id the embedded broker reports (streams/ops/broker.py starts it with it)
EMBEDDED_CLUSTER_ID = "model-fallback-embedded"


async def broker_is_embedded(client_options: dict[str, Any]) -> bool:
    """True if the broker at these options is the embedded one."""
    admin = AIOKafkaAdminClient(**client_options)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    return bool(cluster.get("cluster_id") == EMBEDDED_CLUSTER_ID)
