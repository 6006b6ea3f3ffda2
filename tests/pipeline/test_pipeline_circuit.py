"""Health evaluation end to end: a tier fails hard, its circuit opens, probes, closes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schemas.events import Trigger
from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config, scripted_tier

pytestmark = pytest.mark.asyncio(loop_scope="session")


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
        report = pipeline.worker.get("/metrics/")
        assert report["circuits"]["primary"]["times_opened"] == 1
