"""The gateway end to end: the real embedded broker, a real worker with chDB,
two gateway processes (replicas 0 and 1 of 2), fake OpenAI upstreams, and
the official `openai` SDK as the client."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_asyncio

from streams.config import FallbackConfig
from streams.config.models import GatewayConfig
from streams.gateway.process import GatewayProcess, running_gateway
from streams.ops.broker import EmbeddedBroker, free_port
from tests.conftest import harness_for, pipeline_config
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline.harness import PipelineHarness

# Keys shaped like real ones, so a leak would be found by a plain substring search.
ACME_KEY = "sk-gw-acme-7f3a9c2e1b5d4f60a8e7c6b5a4f3e2d1c0b9a8f7"
GLOBEX_KEY = "sk-gw-globex-0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d"
SLOW_LANE_KEY = "sk-gw-slowlane-5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b"
ONE_AT_A_TIME_KEY = "sk-gw-oneatatime-9d8c7b6a5f4e3d2c1b0a99887766554433221100"
BAD_KEY = "sk-gw-not-a-key-1234567890abcdef1234567890abcdef123456"
ALL_KEYS = (ACME_KEY, GLOBEX_KEY, SLOW_LANE_KEY, ONE_AT_A_TIME_KEY, BAD_KEY)
ACME_KEY_ENV = "GW_TEST_ACME_KEY"

PRIMARY_REPLY = "Paris is the capital of France and its largest city."
BACKUP_REPLY = "The capital of France is Paris."


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def openai_tier(name: str, server: FakeOpenAIServer) -> dict[str, Any]:
    return {
        "name": name,
        "adapter": {
            "kind": "openai_chat",
            "base_url": server.base_url,
            "model": f"fake-{name}",
        },
        # Generous: a first call on a loaded machine must not fall back by accident.
        "timeout_ms": 5000,
        "max_in_flight": 50,
        "default_confidence": 0.9,
        "accept": {"min_confidence": 0.5, "quality": [{"check": "non_empty"}]},
        "circuit": {"enabled": False},
    }


def gateway_section(replica_index: int) -> dict[str, Any]:
    return {
        "port": free_port(),
        "model": "fallback",
        "chains": {"echo": {"tags": ["chain-echo"]}},
        "keys": [
            {"name": "acme", "tenant": "acme", "key_env": ACME_KEY_ENV},
            {"name": "globex", "tenant": "globex", "key_sha256": sha256(GLOBEX_KEY)},
            {
                "name": "slow-lane",
                "tenant": "acme",
                "key_sha256": sha256(SLOW_LANE_KEY),
                "requests_per_minute": 2,
            },
            {
                "name": "one-at-a-time",
                "tenant": "acme",
                "key_sha256": sha256(ONE_AT_A_TIME_KEY),
                "max_in_flight": 1,
            },
        ],
        "default_timeout_ms": 20_000,
        "max_timeout_ms": 30_000,
        "replica_index": replica_index,
        "replica_count": 2,
        # Replica 1 starts a waiting stream after 300 ms (keep-alives, then the answer).
        "stream_keepalive_ms": 300 if replica_index == 1 else None,
    }


def gateway_config(base: FallbackConfig, replica_index: int) -> FallbackConfig:
    section = GatewayConfig.model_validate(gateway_section(replica_index))
    return base.model_copy(update={"gateway": section})


@dataclass
class GatewayStack:
    harness: PipelineHarness
    gateways: list[GatewayProcess]
    primary: FakeOpenAIServer
    backup: FakeOpenAIServer
    workdir: Path

    def client(self, replica: int = 0, key: str = ACME_KEY, **options: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.gateways[replica].base_url,
            api_key=key,
            max_retries=options.pop("max_retries", 0),
            timeout=options.pop("timeout", 30.0),
            **options,
        )


@pytest.fixture(scope="package")
def fake_upstreams() -> Iterator[tuple[FakeOpenAIServer, FakeOpenAIServer]]:
    with (
        FakeOpenAIServer(reply=PRIMARY_REPLY) as primary,
        FakeOpenAIServer(reply=BACKUP_REPLY) as backup,
    ):
        yield primary, backup


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def gateway_stack(
    broker: EmbeddedBroker,
    tmp_path_factory: pytest.TempPathFactory,
    fake_upstreams: tuple[FakeOpenAIServer, FakeOpenAIServer],
) -> AsyncIterator[GatewayStack]:
    primary, backup = fake_upstreams
    tmp = tmp_path_factory.mktemp("gateway")
    config = pipeline_config(
        broker,
        tmp,
        [
            openai_tier("primary", primary),
            openai_tier("backup", backup),
            {
                "name": "echo",
                "adapter": {"kind": "python", "callable": "tests.gateway.models:echo"},
                "restricted": True,
                "timeout_ms": 2000,
                "max_in_flight": 200,
                "circuit": {"enabled": False},
            },
        ],
        # The `echo` model name tags its requests; this rule confines them to
        # the echo tier, which (restricted) serves nothing else.
        policy={
            "restricted_tier": "echo",
            "rules": [{"name": "echo-chain", "tags": ["chain-echo"], "route_to_restricted": True}],
        },
        gateway=gateway_section(0),
    )
    os.environ[ACME_KEY_ENV] = ACME_KEY  # the gateway processes inherit it
    async with harness_for(config, tmp) as harness, contextlib.AsyncExitStack() as stack:
        gateways = []
        for replica in (0, 1):
            process = stack.enter_context(
                running_gateway(gateway_config(config, replica), tmp, loglevel="debug")
            )
            gateways.append(process)
        for process in gateways:
            process.wait_ready(60)
        yield GatewayStack(harness, gateways, primary, backup, tmp)
