"""The gateway on rotating topics (docs/topic-rotation.md): calls made while
the generations turn over are all answered, each with its own answer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import openai
import pytest

from streams.gateway.process import running_gateway
from streams.ops.broker import EmbeddedBroker, free_port
from tests.conftest import harness_for, pipeline_config
from tests.gateway.conftest import ACME_KEY, ACME_KEY_ENV
from tests.pipeline.harness import generations_after_a_prepare
from topics.generations import generation_at

pytestmark = pytest.mark.asyncio(loop_scope="session")

PERIOD_S = 3.0


async def test_calls_across_generations_get_their_own_answers(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    echo = {
        "name": "echo",
        "adapter": {"kind": "python", "callable": "tests.gateway.models:echo"},
        "circuit": {"enabled": False},
    }
    gateway = {
        "port": free_port(),
        "model": "fallback",
        "keys": [{"name": "acme", "tenant": "acme", "key_env": ACME_KEY_ENV}],
    }
    config = pipeline_config(
        broker,
        tmp_path,
        [echo],
        kafka={"topic_rotation_s": PERIOD_S},
        analytics={"enabled": False},
        gateway=gateway,
    )
    os.environ[ACME_KEY_ENV] = ACME_KEY
    async with harness_for(config, tmp_path), contextlib.AsyncExitStack() as stack:
        process = stack.enter_context(running_gateway(config, tmp_path))
        await asyncio.to_thread(process.wait_ready, 60)
        client = openai.AsyncOpenAI(
            base_url=process.base_url, api_key=ACME_KEY, max_retries=0, timeout=20.0
        )
        async with client:

            async def call(i: int) -> str:
                completion = await client.chat.completions.create(
                    model="fallback", messages=[{"role": "user", "content": f"call {i}"}]
                )
                return completion.choices[0].message.content or ""

            first = generation_at(time.time(), PERIOD_S)
            calls: list[asyncio.Task[str]] = []
            while generation_at(time.time(), PERIOD_S) < first + 4:
                calls.append(asyncio.create_task(call(len(calls))))
                await asyncio.sleep(0.05)
            answers = await asyncio.gather(*calls)
        left, now = await generations_after_a_prepare(config)
    print(f"\ngateway on rotating topics: {len(answers)} calls over 4 generations")
    assert answers == [f"echo: call {i}" for i in range(len(answers))]
    # Analytics is off, so nothing in the worker's group reads responses: a
    # generation still goes once the stages' topics of it are read out.
    assert {now, now + 1} <= left <= {now - 1, now, now + 1}, (sorted(left), now)
