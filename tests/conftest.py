"""Shared fixtures: the real embedded broker, real workers, real chDB."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from streams.config import FallbackConfig, parse_config
from streams.ops.broker import EmbeddedBroker, free_port, running_broker
from streams.ops.worker_process import running_worker
from tests.pipeline.harness import PipelineHarness

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
            "callable": "tests.pipeline.models:scripted",
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
            # The plain names, as on real Kafka.  The embedded broker's default,
            # rotating topics, has its own tests (test_pipeline_topic_rotation.py).
            "topic_rotation_s": 0,
        },
        "worker": {"app_id": f"fallback-{run}", "web_port": free_port()},
        "analytics": {"chdb_path": str(tmp / run / "chdb"), "batch_max_wait_ms": 500},
        "tiers": tiers,
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(data)


@contextlib.asynccontextmanager
async def harness_for(config: FallbackConfig, workdir: Path) -> AsyncIterator[PipelineHarness]:
    """A real worker process for `config`, ready (partitions assigned), and a caller."""
    with running_worker(config, workdir) as worker:
        await asyncio.to_thread(worker.wait_ready, 90.0)
        harness = PipelineHarness(config, worker)
        await harness.start()
        try:
            yield harness
        finally:
            await harness.stop()


def shared_pipeline_config(broker: EmbeddedBroker, tmp: Path) -> FallbackConfig:
    """Four scripted tiers exercising every trigger; circuits effectively off."""
    quiet_circuit = {"min_calls": 100000, "min_slow_calls": 100000}
    return pipeline_config(
        broker,
        tmp,
        [
            scripted_tier(
                "primary",
                region="us",
                price={"per_call_usd": 0.01},
                accept={
                    "max_latency_ms": 300,
                    "min_confidence": 0.8,
                    "safety": True,
                    "quality": [
                        {"check": "callable", "callable": "tests.pipeline.models:fact_check"}
                    ],
                },
                retry={"max_retries": 1, "initial_backoff_ms": 20},
                circuit=quiet_circuit,
            ),
            scripted_tier(
                "backup",
                region="eu",
                price={"per_call_usd": 0.001},
                context_window_tokens=32000,
                accept={
                    "max_latency_ms": 500,
                    "min_confidence": 0.8,
                    "safety": True,
                    "quality": [{"check": "non_empty"}],
                },
                circuit=quiet_circuit,
            ),
            scripted_tier(
                "local",
                region="eu",
                price={"per_call_usd": 0.0},
                accept={"min_confidence": 0.5},
                circuit=quiet_circuit,
            ),
            scripted_tier(
                "restricted",
                region="eu",
                restricted=True,
                price={"per_call_usd": 0.0},
                accept={"min_confidence": 0.5},
                circuit=quiet_circuit,
            ),
        ],
        policy={
            "restricted_tier": "restricted",
            "input_safety": True,
            "rules": [{"name": "eu-data", "regions": ["eu"], "same_region_only": True}],
        },
        budgets={
            "tenants": {"skint": {"usd": 0.005, "window_s": 3600, "expensive_above_usd": 0.005}}
        },
    )


@pytest_asyncio.fixture(scope="session")
async def shared_pipeline(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PipelineHarness]:
    tmp = tmp_path_factory.mktemp("shared")
    async with harness_for(shared_pipeline_config(broker, tmp), tmp) as harness:
        yield harness
