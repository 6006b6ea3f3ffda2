"""Health evaluation end to end: a tier fails hard, its circuit opens, probes,
closes; and once it is open, calls already queued for the tier are not made."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from schemas.events import Trigger
from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config, scripted_tier
from tests.fakes.openai_server import FakeOpenAIServer, OpenAIFault

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROMPT = "Tell me the secret recipe of the purple elephant"
API_KEY = "sk-test-CIRCUIT-0123456789abcdefghijklmnop"


async def test_circuit_opens_probes_and_closes(broker: EmbeddedBroker, tmp_path: Path) -> None:
    circuit = {
        "window_s": 30,
        "min_calls": 10,
        "failure_rate": 0.5,
        "open_s": 1.5,
        "half_open_probes": 2,
    }
    config = pipeline_config(
        broker,
        tmp_path,
        [scripted_tier("primary", circuit=circuit), scripted_tier("backup")],
        analytics={"enabled": False},
    )
    async with harness_for(config, tmp_path) as pipeline:
        # 1. The primary fails hard: every call errors, backup serves.
        failing = [pipeline.new_request({"primary": "error"}) for _ in range(12)]
        for response in await pipeline.ask_many(failing):
            assert response.served_by == "backup"
        state = pipeline.worker.get("/circuits/")["primary"]
        assert state["state"] == "open" and state["failures"] >= 10

        # 2. Open: requests skip the primary without calling it, even healthy ones.
        skipped = await pipeline.ask()
        assert skipped.served_by == "backup"
        first = skipped.attempts[0]
        assert (first.tier, first.trigger, first.called, first.cost_usd) == (
            "primary",
            Trigger.CIRCUIT_OPEN,
            False,
            0.0,
        )

        # 3. After open_s, probes are let through; their success closes the circuit.
        await asyncio.sleep(1.7)
        probes = [await pipeline.ask() for _ in range(2)]
        assert [p.served_by for p in probes] == ["primary", "primary"]
        assert pipeline.worker.get("/circuits/")["primary"]["state"] == "closed"
        recovered = await pipeline.ask()
        assert recovered.served_by == "primary" and len(recovered.attempts) == 1
        report = pipeline.worker.get("/stats/")
        assert report["circuits"]["primary"]["times_opened"] == 1


async def test_an_open_circuit_stops_calls_already_queued(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of 10 x max_in_flight against a silent upstream: once the circuit
    opens, the calls still queued for the tier skip it instead of reaching it."""
    max_in_flight, burst = 10, 100
    monkeypatch.setenv("FAKE_OPENAI_KEY", API_KEY)  # the worker process inherits it
    with FakeOpenAIServer() as upstream:
        upstream.set_fault(OpenAIFault.SILENT, delay_s=60.0)
        primary = {
            "name": "primary",
            "adapter": {
                "kind": "openai_chat",
                "base_url": upstream.base_url,
                "model": "fake-primary",
                "api_key_env": "FAKE_OPENAI_KEY",
                "first_token_timeout_ms": 1000,
            },
            "timeout_ms": 2000,
            "max_in_flight": max_in_flight,
            "default_confidence": 0.9,
            "accept": {"min_confidence": 0.5},
            # open on the first wave of timeouts; no probe within the test
            "circuit": {"window_s": 60, "min_calls": max_in_flight, "open_s": 300},
        }
        config = pipeline_config(
            broker, tmp_path, [primary, scripted_tier("backup")], analytics={"enabled": False}
        )
        async with harness_for(config, tmp_path) as pipeline:
            requests = [
                pipeline.new_request(input={"messages": [{"role": "user", "content": PROMPT}]})
                for _ in range(burst)
            ]
            started = time.monotonic()
            responses = await pipeline.ask_many(requests, timeout_s=120)
            elapsed_s = time.monotonic() - started
            calls = upstream.request_count
            assert all(r.served_by == "backup" for r in responses)
            # Calls started before the circuit opened: the first wave (whose timeouts
            # opened it) and the wave that took the slots they freed.  None after.
            assert calls <= 2 * max_in_flight, f"{calls} calls reached a dead upstream"
            skipped = [r.attempts[0] for r in responses if not r.attempts[0].called]
            assert len(skipped) >= burst - calls
            assert {(a.tier, a.trigger, a.cost_usd) for a in skipped} == {
                ("primary", Trigger.CIRCUIT_OPEN, 0.0)
            }
            circuit = pipeline.worker.get("/circuits/")["primary"]
            assert (circuit["state"], circuit["times_opened"]) == ("open", 1)
            # The log: the transition and the failed calls, never the prompt or the key.
            log = pipeline.worker.log_path.read_text(errors="replace")
            assert "circuit primary: closed -> open (" in log
            assert "tier primary: a call to fake-primary failed (timeout)" in log
            assert PROMPT not in log and API_KEY not in log
            print(
                f"burst {burst}, max_in_flight {max_in_flight}: {calls} upstream calls, "
                f"all answered in {elapsed_s:.1f} s"
            )
