"""Workers join and leave under load: no worker crashes, every request is answered.

Two workers share the stages' group and the tenant spend table.  Twenty times,
one of them (each in turn) gets SIGTERM and exits while its replacement starts
and joins (a rolling restart), while a
caller sends a steady stream of priced requests (so spend events flow all the
time: a rebalance used to crash the other worker in Faust's table recovery,
faust-streaming #158).  Prints requests, lost, duplicated and the times to
recover; fails on any crash or any request without a response.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from streams.config import FallbackConfig
from streams.ops.broker import EmbeddedBroker, free_port
from streams.ops.worker import READY_LINE_PREFIX
from streams.ops.worker_process import WorkerProcess, start_worker_process
from tests.conftest import pipeline_config, scripted_tier
from tests.pipeline.harness import PipelineHarness

pytestmark = pytest.mark.asyncio(loop_scope="session")

T = TypeVar("T")

CYCLES = 20
#: requests per second the caller sends throughout
LOAD_RPS = 100
#: tenants the load is spread over: each publish then sends several spend events
#: at once, and so the tables' inputs arrive in multi-record batches (the case
#: that crashed Faust's table recovery)
TENANTS = 5
#: after the last cycle, how long the last requests may take to be answered
SETTLE_S = 30.0


def join_leave_config(
    broker: EmbeddedBroker, tmp_path: Path, rotation_s: float = 0
) -> FallbackConfig:
    return pipeline_config(
        broker,
        tmp_path,
        [scripted_tier("primary", price={"per_call_usd": 0.001}, circuit={"enabled": False})],
        analytics={"enabled": False},  # chDB is one process; two workers here
        # The product's group timings on the embedded broker (a 2 s session,
        # 0.5 s heartbeats): under this load no member may be evicted falsely.
        kafka={
            "session_timeout_s": None,
            "heartbeat_interval_s": None,
            "rebalance_timeout_s": 4,
            "topic_rotation_s": rotation_s,
        },
    )


def with_port(config: FallbackConfig) -> FallbackConfig:
    worker = config.worker.model_copy(update={"web_port": free_port()})
    return config.model_copy(update={"worker": worker})


class Load:
    """Sends LOAD_RPS requests a second and records when each was sent and answered."""

    def __init__(self, harness: PipelineHarness) -> None:
        self.harness = harness
        self.sent_at: dict[str, float] = {}
        self.answered_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._send())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _send(self) -> None:
        tick_s = 0.05
        per_tick = max(1, int(LOAD_RPS * tick_s))
        sent = 0
        while True:
            for _ in range(per_tick):
                sent += 1
                request = self.harness.new_request(tenant=f"tenant-{sent % TENANTS}")
                waiter = await self.harness.send(request)
                self.sent_at[request.request_id] = time.monotonic()
                waiter.add_done_callback(
                    lambda _, rid=request.request_id: self.answered_at.setdefault(
                        rid, time.monotonic()
                    )
                )
            await self.harness.client.producer.flush()
            await asyncio.sleep(tick_s)

    def worst_wait_since(self, since: float, until: float) -> float:
        """The longest a request sent in [since, until) waited (unanswered: until now)."""
        now = time.monotonic()
        waits = [
            self.answered_at.get(rid, now) - at
            for rid, at in self.sent_at.items()
            if since <= at < until
        ]
        return max(waits, default=0.0)


async def converged_spend_tables(workers: list[WorkerProcess]) -> list[dict[str, float]]:
    """Each worker's spend table once they agree (a spend event takes a hop), or as is."""
    tables: list[dict[str, float]] = []
    for _ in range(50):
        tables = [w.get("/stats/")["tenant_spend_table"] for w in workers]
        if tables[0] == pytest.approx(tables[1]):
            break
        await asyncio.sleep(0.1)
    return tables


async def in_thread(call: Callable[..., T], *args: Any) -> tuple[T, float]:
    """`call(*args)` in a thread, and how long it took."""
    began = time.monotonic()
    result = await asyncio.to_thread(call, *args)
    return result, time.monotonic() - began


def assert_running(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        if worker.process.poll() is not None:
            raise AssertionError(
                f"worker exited with {worker.process.returncode}:\n{worker.log_tail()}"
            )


@pytest.mark.parametrize(
    ("rotation_s", "cycles"),
    # With topic rotation (docs/topic-rotation.md) the partitions are shared
    # out by a membership group and each worker assigns itself those of every
    # generation: joins and leaves go through that path, as topics turn over.
    [(0, CYCLES), (3.0, 6)],
    ids=["plain", "rotating"],
)
async def test_twenty_joins_and_leaves_under_load_crash_nothing_and_lose_nothing(
    broker: EmbeddedBroker, tmp_path: Path, rotation_s: float, cycles: int
) -> None:
    config = join_leave_config(broker, tmp_path, rotation_s)
    workers = [start_worker_process(c, tmp_path) for c in (config, with_port(config))]
    every_process = list(workers)
    harness = PipelineHarness(config, workers[0])
    load = Load(harness)
    stops: list[float] = []  # SIGTERM to exit 0
    rejoins: list[float] = []  # replacement's start to ready (partitions assigned)
    stalls: list[float] = []  # worst wait of a request sent during the cycle
    try:
        await asyncio.gather(*(asyncio.to_thread(w.wait_ready, 90.0) for w in workers))
        await harness.start()
        load.start()
        await asyncio.sleep(1.0)
        for cycle in range(cycles):
            # A rolling restart: the replacement starts as the worker leaves.
            index = cycle % 2
            leaving = workers[index]
            began = time.monotonic()
            workers[index] = start_worker_process(with_port(config), tmp_path)
            every_process.append(workers[index])
            (code, stop_s), (_, ready_s) = await asyncio.gather(
                in_thread(leaving.stop, 30.0), in_thread(workers[index].wait_ready, 90.0)
            )
            stops.append(stop_s)
            rejoins.append(ready_s)
            assert code == 0, f"cycle {cycle}: SIGTERM gave exit {code}:\n{leaving.log_tail()}"
            assert_running(workers)
            stalls.append(load.worst_wait_since(began, time.monotonic()))
            print(
                f"cycle {cycle + 1}: stop {stops[-1]:.1f} s, ready again {rejoins[-1]:.1f} s, "
                f"answered {len(load.answered_at)}/{len(load.sent_at)}",
                flush=True,
            )
        await load.stop()
        deadline = time.monotonic() + SETTLE_S
        while len(load.answered_at) < len(load.sent_at) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert_running(workers)
        tables = await converged_spend_tables(workers)
    finally:
        await load.stop()
        await harness.stop()
        for worker in workers:
            worker.stop()

    sent = len(load.sent_at)
    lost = sent - len(load.answered_at)
    duplicated = sum(count - 1 for count in harness.response_counts.values() if count > 1)
    print(
        f"\njoin/leave ({'rotating' if rotation_s else 'plain'}): {cycles} cycles at "
        f"{LOAD_RPS} req/s: requests {sent}, lost {lost}, "
        f"duplicated {duplicated}, crashes 0\n"
        f"  SIGTERM to exit: median {statistics.median(stops):.1f} s, max {max(stops):.1f} s\n"
        f"  replacement's start to ready: median {statistics.median(rejoins):.1f} s, "
        f"max {max(rejoins):.1f} s\n"
        f"  time to recover (worst wait of a request sent during a cycle): "
        f"median {statistics.median(stalls):.1f} s, max {max(stalls):.1f} s"
    )
    assert lost == 0, f"{lost} of {sent} requests got no response"
    # Every worker said once, at the default log level, that it was ready.
    for process in every_process:
        assert process.log_path.read_text(errors="replace").count(READY_LINE_PREFIX) == 1
    # Both workers' copies of the spend table hold the same totals.
    assert tables[0] == pytest.approx(tables[1]) and sum(tables[0].values()) > 0
