"""Cost controls across workers: tenant spend lives in a Faust table every worker reads."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from schemas.events import Trigger
from streams.ops.broker import EmbeddedBroker, free_port
from streams.ops.worker_process import running_worker
from tests.conftest import pipeline_config, scripted_tier
from tests.pipeline.harness import PipelineHarness

pytestmark = pytest.mark.asyncio(loop_scope="session")


def table_total(metrics: dict[str, object], tenant: str) -> float:
    table = metrics["tenant_spend_table"]
    assert isinstance(table, dict)
    return sum(float(v) for k, v in table.items() if str(k).startswith(f"{tenant}@"))


async def test_every_worker_sees_the_same_tenant_spend(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    config = pipeline_config(
        broker,
        tmp_path,
        [
            scripted_tier("primary", price={"per_call_usd": 0.01}),
            scripted_tier("backup", price={"per_call_usd": 0.001}),
        ],
        analytics={"enabled": False},  # chDB is one process; two workers share a group here
        budgets={"tenants": {"shared": {"usd": 0.03, "expensive_above_usd": 0.005}}},
    )
    second = config.model_copy(
        update={"worker": config.worker.model_copy(update={"web_port": free_port()})}
    )
    with running_worker(config, tmp_path) as one, running_worker(second, tmp_path) as two:
        await asyncio.gather(
            asyncio.to_thread(one.wait_ready, 90.0), asyncio.to_thread(two.wait_ready, 90.0)
        )
        harness = PipelineHarness(config, one)
        await harness.start()
        try:
            # 1. Spend the budget: three $0.01 answers from the primary.
            first = await harness.ask_many([harness.new_request(tenant="shared") for _ in range(3)])
            assert [r.served_by for r in first] == ["primary"] * 3

            # 2. Both workers' tables converge on the same total.
            deadline = time.monotonic() + 30
            totals: tuple[float, float] = (0.0, 0.0)
            while time.monotonic() < deadline:
                totals = (
                    table_total(one.get("/stats/"), "shared"),
                    table_total(two.get("/stats/"), "shared"),
                )
                if totals == (pytest.approx(0.03), pytest.approx(0.03)):
                    break
                await asyncio.sleep(0.2)
            assert totals == (pytest.approx(0.03), pytest.approx(0.03))

            # 3. Whichever worker routes them, the spent tenant falls to the cheaper tier.
            later = await harness.ask_many([harness.new_request(tenant="shared") for _ in range(8)])
            for response in later:
                assert response.served_by == "backup"
                assert response.attempts[0].trigger is Trigger.OVER_BUDGET
        finally:
            await harness.stop()
