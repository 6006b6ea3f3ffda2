"""Shared fixtures: the real embedded broker, real workers, real chDB."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.broker import EmbeddedBroker, free_port, running_broker
from streams.config import FallbackConfig, parse_config

_names = itertools.count(1)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with running_broker() as embedded:
        yield embedded


def scripted_tier(name: str, **overrides: Any) -> dict[str, Any]:
    tier: dict[str, Any] = {
        "name": name,
        "adapter": {
            "kind": "python",
            "callable": "tests.pipeline_models:scripted",
            "options": {"tier": name},
        },
        "price": {"per_call_usd": 0.001},
        "timeout_ms": 1000,
        "max_in_flight": 100,
        "accept": {"max_latency_ms": 500, "min_confidence": 0.8},
    }
    tier.update(overrides)
    return tier


def pipeline_config(
    broker: EmbeddedBroker, tmp: Path, tiers: list[dict[str, Any]], **sections: Any
) -> FallbackConfig:
    """A config with its own topics, consumer group, web port and chDB directory."""
    run = f"t{next(_names)}-{uuid.uuid4().hex[:6]}"
    data: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": broker.bootstrap_servers,
            "topic_prefix": f"{run}.",
            "partitions": 2,
            "session_timeout_s": 6,
            "heartbeat_interval_s": 0.5,
            "rebalance_timeout_s": 6,
            "commit_interval_s": 0.5,
        },
        "worker": {"app_id": f"fallback-{run}", "web_port": free_port()},
        "analytics": {"chdb_path": str(tmp / run / "chdb"), "batch_max_wait_ms": 100},
        "tiers": tiers,
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(data)
