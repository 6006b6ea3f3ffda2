"""LLM tiers end to end: a worker calling local servers that speak the real
OpenAI chat-completions protocol and inject each provider fault on demand.

For every fault: which tier served, how many calls the faulty upstream got,
the verdict's trigger, that no truncated answer was served, and that the
worker is healthy afterwards.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config, scripted_tier
from tests.fakes.openai_server import FakeOpenAIServer, OpenAIFault
from tests.pipeline.harness import PipelineHarness

pytestmark = pytest.mark.asyncio(loop_scope="session")

API_KEY = "sk-test-SECRET-0123456789abcdefghijklmnopqrstuv"
PRIMARY_REPLY = "Paris is the capital of France and its largest city."
BIG_REPLY = "The capital of France is Paris."


@dataclass
class LLMPipeline:
    harness: PipelineHarness
    primary: FakeOpenAIServer
    big: FakeOpenAIServer
    workdir: Path


def openai_tier(name: str, server: FakeOpenAIServer, **overrides: object) -> dict[str, object]:
    tier: dict[str, object] = {
        "name": name,
        "adapter": {
            "kind": "openai_chat",
            "base_url": server.base_url,
            "model": f"fake-{name}",
            "api_key_env": "FAKE_OPENAI_KEY",
            "first_token_timeout_ms": 400,
            "stall_timeout_ms": 400,
        },
        "price": {"per_1k_input_tokens_usd": 0.005, "per_1k_output_tokens_usd": 0.015},
        "timeout_ms": 2000,
        "max_in_flight": 50,
        "default_confidence": 0.9,
        "accept": {"min_confidence": 0.5, "quality": [{"check": "non_empty"}]},
        "retry": {"max_retries": 2, "initial_backoff_ms": 20, "max_backoff_ms": 100},
        "circuit": {"min_calls": 100000, "min_slow_calls": 100000},
    }
    tier.update(overrides)
    return tier


@pytest.fixture(scope="module")
def llm_servers() -> Iterator[tuple[FakeOpenAIServer, FakeOpenAIServer]]:
    with FakeOpenAIServer(reply=PRIMARY_REPLY) as primary, FakeOpenAIServer(reply=BIG_REPLY) as big:
        yield primary, big


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def llm_pipeline(
    broker: EmbeddedBroker,
    tmp_path_factory: pytest.TempPathFactory,
    llm_servers: tuple[FakeOpenAIServer, FakeOpenAIServer],
) -> AsyncIterator[LLMPipeline]:
    primary, big = llm_servers
    tmp = tmp_path_factory.mktemp("llm")
    config = pipeline_config(
        broker,
        tmp,
        [
            openai_tier("primary", primary, context_window_tokens=8192),
            openai_tier("big", big, context_window_tokens=128000),
            scripted_tier("restricted", restricted=True, accept={}),
        ],
        policy={"restricted_tier": "restricted"},
    )
    os.environ["FAKE_OPENAI_KEY"] = API_KEY  # the worker process inherits it
    async with harness_for(config, tmp) as harness:
        yield LLMPipeline(harness, primary, big, tmp)


@pytest.fixture(autouse=True)
def fresh_servers(llm_servers: tuple[FakeOpenAIServer, FakeOpenAIServer]) -> None:
    for server in llm_servers:
        server.reset()


async def ask(pipeline: LLMPipeline) -> tuple[object, list[tuple[str, str | None]]]:
    response = await pipeline.harness.ask(
        input={"messages": [{"role": "user", "content": "What is the capital of France?"}]},
        params={"max_tokens": 64},
    )
    path = [(a.tier, a.trigger.value if a.trigger else None) for a in response.attempts]
    return response, path


async def assert_healthy(pipeline: LLMPipeline) -> None:
    _, path = await ask(pipeline)
    assert path == [("primary", None)], "the worker did not recover"
    health = httpx.get(pipeline.harness.worker.url + "/health/", timeout=5)
    assert health.status_code == 200


# fault, times, expected served tier, expected primary calls, expected primary triggers
CASES = [
    (OpenAIFault.CUT_MID_STREAM, None, "big", 3, ["truncated"] * 3),
    (OpenAIFault.NO_END, None, "big", 3, ["truncated"] * 3),
    # One end marker is enough: a whole answer is served at once, never retried.
    (OpenAIFault.NO_DONE, None, "primary", 1, [None]),
    (OpenAIFault.CUT_AFTER_FINISH, None, "primary", 1, [None]),
    (OpenAIFault.NO_FINISH_REASON, None, "primary", 1, [None]),
    (OpenAIFault.MALFORMED_CHUNK, None, "big", 1, ["error"]),
    (OpenAIFault.RATE_LIMIT, 1, "primary", 2, ["rate_limited", None]),
    (OpenAIFault.SERVER_ERROR, 1, "primary", 2, ["error", None]),
    (OpenAIFault.CONNECTION_RESET, 1, "primary", 2, ["error", None]),
    (OpenAIFault.SILENT, None, "big", 3, ["timeout"] * 3),
    (OpenAIFault.STALL_MID_STREAM, None, "big", 3, ["timeout"] * 3),
    (OpenAIFault.CONTEXT_LENGTH_EXCEEDED, None, "big", 1, ["context_length"]),
    (OpenAIFault.CONTENT_POLICY, None, "restricted", 1, ["policy"]),
    (OpenAIFault.CONTENT_FILTER_FINISH, None, "restricted", 1, ["policy"]),
]


@pytest.mark.parametrize(
    ("fault", "times", "served_by", "primary_calls", "primary_triggers"),
    CASES,
    ids=[case[0].value for case in CASES],
)
async def test_provider_fault_becomes_the_right_verdict(
    llm_pipeline: LLMPipeline,
    fault: OpenAIFault,
    times: int | None,
    served_by: str,
    primary_calls: int,
    primary_triggers: list[str | None],
) -> None:
    options = {"retry_after": "0.3"} if fault is OpenAIFault.RATE_LIMIT else {}
    if fault in (OpenAIFault.SILENT, OpenAIFault.STALL_MID_STREAM):
        options = {"delay_s": 5.0}
    llm_pipeline.primary.set_fault(fault, times=times, **options)
    response, path = await ask(llm_pipeline)
    assert response.served_by == served_by, path
    assert [t for tier, t in path if tier == "primary"] == primary_triggers
    assert llm_pipeline.primary.request_count == primary_calls
    # Never a partial answer: what was served is a whole reply of the serving tier.
    expected = {"primary": PRIMARY_REPLY, "big": BIG_REPLY}.get(served_by)
    if expected is not None:
        assert response.output["content"] == expected
    if fault is OpenAIFault.RATE_LIMIT:
        assert response.latency_ms >= 300  # Retry-After honoured
    if fault is OpenAIFault.CONTENT_POLICY:
        assert "content_policy_violation" in " ".join(response.attempts[0].reasons) or (
            "policy" in " ".join(response.attempts[0].reasons)
        )
    llm_pipeline.primary.reset()
    await assert_healthy(llm_pipeline)


async def test_tokens_and_cost_come_from_usage(llm_pipeline: LLMPipeline) -> None:
    response, _ = await ask(llm_pipeline)
    body = llm_pipeline.primary.requests[-1].body
    usage = llm_pipeline.primary.usage_for(body)
    expected = usage["prompt_tokens"] / 1000 * 0.005 + usage["completion_tokens"] / 1000 * 0.015
    assert response.cost_usd == pytest.approx(expected)
    assert body["model"] == "fake-primary" and body["stream"] is True


async def test_api_key_never_leaves_the_adapter(llm_pipeline: LLMPipeline) -> None:
    """Runs last in this module: it ends by stopping the worker to read chDB."""
    llm_pipeline.primary.set_fault(OpenAIFault.UNAUTHORIZED)  # the 401 body quotes the key
    response, _ = await ask(llm_pipeline)
    assert response.served_by == "big"
    assert llm_pipeline.primary.requests[-1].headers["Authorization"] == f"Bearer {API_KEY}"
    harness = llm_pipeline.harness
    topics = harness.client.topics
    seen = []
    for topic in (
        topics.responses,
        topics.verdicts,
        topics.dlq,
        topics.tier("primary"),
        topics.attempts("primary"),
    ):
        seen += [r.value for r in await harness.read_topic(topic, until=10**6, timeout_s=2)]
    assert seen and not any(API_KEY.encode() in value for value in seen)
    assert not any(API_KEY[-12:].encode() in value for value in seen)
    report = json.dumps(harness.worker.get("/report/"))
    assert API_KEY not in report
    log = harness.worker.log_path.read_text(errors="replace")
    assert API_KEY not in log and API_KEY[-12:] not in log
    config_text = harness.worker.config_path.read_text()
    assert API_KEY not in config_text  # the config only names the variable

    # Last: stop the worker (it holds chDB) and read every ClickHouse row as text.
    rows = harness.stored_rows_as_text()
    assert rows and not any(API_KEY in row or API_KEY[-12:] in row for row in rows)
