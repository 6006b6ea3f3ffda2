"""A tier call's limits start when the request is sent, not while it waits in the worker.

Many calls at once through a tier that admits few at a time: an HTTP upstream
behind a small connection pool, a blocking model on a small thread pool.  The
calls waiting their turn inside the worker must never be reported as the
model's timeout; what they waited is `queue_wait_ms`, bounded by the request's
deadline alone.  Every count is checked on the model's side too: a call the
upstream never received is never reported as called.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.events import Attempt, Request, RoutedRequest, Trigger
from streams.adapters.base import ModelAdapter
from streams.adapters.openai_chat import OpenAIChatAdapter
from streams.adapters.python_callable import PythonCallableAdapter
from streams.config import OpenAIChatConfig, PythonCallableConfig, TierConfig
from streams.stages.call import attempt_call
from tests.fakes import FakeOpenAIServer, OpenAIFault
from tests.streams.adapters import sample_callables

FIRST_TOKEN_MS = 1000.0
CALLS = 40
CONNECTIONS = 4  # the tier's max_in_flight sizes its connection pool
# Each answer's first token comes this late: 40 calls / 4 connections ≈ 3 s of
# queue.  The fake server shares this process: under the full suite's load it
# answered 100 ms first tokens past a 300 ms limit (4 of 40), hence the margin.
SLOW_S = 0.3


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply="Paris.") as running:
        yield running


def chat_tier(server: FakeOpenAIServer, **overrides: Any) -> TierConfig:
    adapter = OpenAIChatConfig(
        kind="openai_chat",
        base_url=server.base_url,
        model="fake-gpt",
        first_token_timeout_ms=FIRST_TOKEN_MS,
        stall_timeout_ms=FIRST_TOKEN_MS,
    )
    settings: dict[str, Any] = {
        "name": "primary",
        "adapter": adapter,
        "timeout_ms": 2000,
        "max_in_flight": CONNECTIONS,
        "default_confidence": 0.9,
        **overrides,
    }
    return TierConfig(**settings)


def routed(index: int, tier: TierConfig, **request: Any) -> RoutedRequest:
    now = datetime.now(UTC)
    return RoutedRequest(
        request=Request(request_id=f"req-{index}", input={"prompt": "Capital?"}, **request),
        tier=tier.name,
        attempt=1,
        received_at=now,
        routed_at=now,
    )


async def burst(adapter: ModelAdapter, tier: TierConfig, **request: Any) -> list[Attempt]:
    return list(
        await asyncio.gather(
            *(attempt_call(adapter, tier, routed(i, tier, **request)) for i in range(CALLS))
        )
    )


def outcomes(attempts: list[Attempt]) -> Counter[str]:
    found: Counter[str] = Counter()
    for a in attempts:
        trigger = a.error_trigger.value if a.error_trigger else "served"
        found[trigger if a.called else f"{trigger}, not sent"] += 1
    return found


async def test_waiting_for_a_pooled_connection_is_not_the_models_timeout(
    server: FakeOpenAIServer,
) -> None:
    server.reset()
    server.set_fault(OpenAIFault.SLOW_FIRST_TOKEN, delay_s=SLOW_S)
    tier = chat_tier(server)
    adapter = OpenAIChatAdapter(tier.adapter, tier)  # type: ignore[arg-type]
    try:
        attempts = await burst(adapter, tier)
    finally:
        await adapter.aclose()
    waits = sorted(a.queue_wait_ms for a in attempts)
    print(
        f"{CALLS} calls through {CONNECTIONS} connections: {dict(outcomes(attempts))}; "
        f"upstream received {server.request_count}; queue wait max {waits[-1]:.0f} ms"
    )
    # The burst did queue: the last calls waited longer than the first-token limit.
    assert waits[-1] > FIRST_TOKEN_MS
    assert outcomes(attempts) == {"served": CALLS}
    assert server.request_count == CALLS
    # Time on the wire is the model's; the wait for a connection is not in it.
    assert all(a.latency_ms < FIRST_TOKEN_MS + 1000 * SLOW_S * 10 for a in attempts)


async def test_a_call_queued_past_its_deadline_is_not_sent_and_not_a_timeout(
    server: FakeOpenAIServer,
) -> None:
    """With a deadline the queue is bounded: calls still waiting when less than a
    quarter of the tier's timeout is left are not sent (`deadline`, not called);
    every call that was sent is one the upstream received."""
    server.reset()
    server.set_fault(OpenAIFault.SLOW_FIRST_TOKEN, delay_s=0.25)
    tier = chat_tier(server, timeout_ms=1000)
    adapter = OpenAIChatAdapter(tier.adapter, tier)  # type: ignore[arg-type]
    try:
        attempts = await burst(adapter, tier, deadline_ms=1200)
    finally:
        await adapter.aclose()
    seen = outcomes(attempts)
    print(f"{CALLS} calls, deadline 1.2 s: {dict(seen)}; upstream received {server.request_count}")
    assert set(seen) <= {"served", "deadline, not sent"}, seen
    assert seen["deadline, not sent"] > 0  # the burst outlasted the deadline
    assert sum(a.called for a in attempts) == server.request_count
    assert not any(a.retryable for a in attempts if not a.called)
    assert all(a.latency_ms == 0.0 for a in attempts if not a.called)


async def test_waiting_for_a_thread_is_not_the_models_timeout() -> None:
    """A blocking model on a two-thread pool: calls wait for a thread, not in it."""
    sample_callables.counted_calls = 0
    config = PythonCallableConfig(
        kind="python",
        callable="tests.streams.adapters.sample_callables:counted_sleep",
        options={"sleep_s": 0.05},
    )
    tier = TierConfig(name="local", adapter=config, timeout_ms=300, max_in_flight=CALLS)
    adapter = PythonCallableAdapter(config, max_workers=2)
    try:
        attempts = await burst(adapter, tier)  # 40 calls of 50 ms on 2 threads: about 1 s
    finally:
        await adapter.aclose()
    waits = sorted(a.queue_wait_ms for a in attempts)
    print(
        f"{CALLS} calls on 2 threads: {dict(outcomes(attempts))}; model received "
        f"{sample_callables.counted_calls}; queue wait max {waits[-1]:.0f} ms"
    )
    assert waits[-1] > tier.timeout_ms
    assert outcomes(attempts) == {"served": CALLS}
    assert sample_callables.counted_calls == CALLS


async def test_a_silent_model_still_times_out_on_its_own_limit(
    server: FakeOpenAIServer,
) -> None:
    """A silent model still times out on the tier's limit: queue time is not a loophole."""
    server.reset()
    server.set_fault(OpenAIFault.SILENT, delay_s=5.0)
    tier = chat_tier(server, timeout_ms=400)
    adapter = OpenAIChatAdapter(tier.adapter, tier)  # type: ignore[arg-type]
    try:
        attempt = await attempt_call(adapter, tier, routed(0, tier))
    finally:
        await adapter.aclose()
    assert attempt.error_trigger is Trigger.TIMEOUT and attempt.called and attempt.retryable
    assert server.request_count == 1
