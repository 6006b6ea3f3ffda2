"""Time queued in the worker is never a provider timeout (issue 10, item 13).

A real worker sends 200 requests at once to one chat tier whose upstream (a
local server speaking OpenAI's protocol) admits few connections at once: its
listen backlog is small, so most of the burst's connection attempts are
dropped and retried by the kernel a second or more later.  That wait happens
before the request is on the wire.  It is queue time: it must not be counted
against the first-token limit, and no attempt may be reported as a timeout
that the upstream never received (counted on the upstream's side).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config
from tests.fakes import FakeOpenAIServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

BURST = 200


async def test_a_burst_waiting_for_connections_is_not_reported_as_timeouts(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    with FakeOpenAIServer(reply="Paris is the capital of France.", backlog=16) as upstream:
        tier = {
            "name": "primary",
            "adapter": {
                "kind": "openai_chat",
                "base_url": upstream.base_url,
                "model": "fake",
                "first_token_timeout_ms": 1500,
                "stall_timeout_ms": 1500,
            },
            "timeout_ms": 10_000,
            "max_in_flight": BURST,  # every call of the burst starts at once
            "default_confidence": 0.9,
            "retry": {"max_retries": 2, "initial_backoff_ms": 20, "max_backoff_ms": 100},
            "circuit": {"min_calls": 100000},
        }
        config = pipeline_config(broker, tmp_path, [tier], analytics={"enabled": False})
        async with harness_for(config, tmp_path) as pipeline:
            requests = [pipeline.new_request(input={"prompt": f"Q{i}?"}) for i in range(BURST)]
            responses = await pipeline.ask_many(requests, timeout_s=180)

    attempts = [a for r in responses for a in r.attempts]
    triggers = Counter(a.trigger.value if a.trigger else "served" for a in attempts)
    served = sum(r.served_by == "primary" for r in responses)
    received = upstream.request_count
    print(
        f"burst of {BURST} through a 16-connection backlog: {dict(triggers)}; "
        f"upstream received {received}"
    )
    assert len(responses) == BURST
    # Every timeout reported was a request the upstream received and did not answer in
    # time: a call still waiting to connect would push the timeouts over this count.
    assert triggers["timeout"] <= received - served
    # Every call reported as made reached the upstream, but for connections the
    # upstream's kernel took and then reset (its accept queue was full): those are
    # the upstream's `error` (retryable), never a `timeout`.
    reset = [a for a in attempts if a.reasons and "connection failed or reset" in a.reasons[0]]
    assert all(a.trigger is not None and a.trigger.value == "error" for a in reset)
    assert sum(a.called for a in attempts) - len(reset) <= received
