"""The four figures of issue 2, item 12; each returns rows for the summary table.

1. served requests/s, instant model, one worker per core, one tier accepting everything
2. end-to-end p50/p99 latency at half that load, paced open loop (2a: at a light
   load; 2b: the broker's own floor at figure 2's rate, bench/broker_floor.py)
3. added latency per fallback hop (tier 1 serves / tier 2 serves / tier 3 serves)
4. Little's law: 200 ms model, max_in_flight 200 → share of 1,000 req/s
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.broker_floor import broker_floor
from bench.harness import (
    LoadResult,
    bench_config,
    blast,
    paced,
    python_tier,
    quantile,
    warm_up,
    workers_for,
)
from streams.ops.broker import EmbeddedBroker
from streams.ops.client import FallbackClient
from streams.ops.worker_process import WorkerProcess

#: upper bounds that keep `make bench` to a few minutes whatever the speed
MAX_REQUESTS = 60_000
BLAST_SECONDS = 30.0
BLAST_TIMEOUT_S = 60.0
#: row 2a: the same latency measure far below saturation
LIGHT_LOAD = 100.0


@dataclass
class Row:
    figure: str
    measured: str
    target: str = ""
    met: bool | None = None


@dataclass
class Profiler:
    """Optional py-spy recording of the worker during figure 1 (`--profile DIR`)."""

    directory: Path | None
    py_spy: str = ".venv/bin/py-spy"

    @contextlib.contextmanager
    def record(self, worker: WorkerProcess, name: str, seconds: float) -> Iterator[None]:
        if self.directory is None:
            yield
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        out = self.directory / f"{name}.txt"
        process = subprocess.Popen(
            [
                self.py_spy,
                "record",
                "--pid",
                str(worker.process.pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--duration",
                str(int(seconds)),
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield
        finally:
            try:
                process.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                process.terminate()
                process.wait(timeout=10)
            print(f"    profile written to {out}")


def describe(result: LoadResult) -> str:
    return (
        f"{result.served}/{result.sent} served in {result.elapsed_s:.1f}s, "
        f"statuses {result.statuses}"
    )


async def throughput(
    broker: EmbeddedBroker,
    workdir: Path,
    *,
    analytics: bool,
    processes: int = 1,
    profiler: Profiler | None = None,
    with_latency: bool = True,
) -> tuple[list[Row], float]:
    """Figure 1 (and figure 2 on the same workers, unless `with_latency` is off)."""
    workers = f"{processes} worker{'s' if processes > 1 else ''}"
    label = (
        f"1b. served req/s, instant, analytics ON, {workers}"
        if analytics
        else f"1. served req/s, instant, {workers}"
    )
    config = bench_config(
        broker, [python_tier("only", "instant")], analytics=analytics, workdir=workdir
    )
    rows: list[Row] = []
    with workers_for(config, workdir, processes) as running:
        worker = running[0]
        async with FallbackClient(config) as client:
            await client.listen_from_now()
            probe = await warm_up(client, 1000)
            print(f"  warm-up: {describe(probe)} ({probe.rate:.0f} req/s)")
            count = int(min(MAX_REQUESTS, max(2000, probe.rate * BLAST_SECONDS)))
            name = f"figure1-{processes}w" + ("-analytics" if analytics else "")
            recorder = profiler.record(worker, name, 15) if profiler else contextlib.nullcontext()
            with recorder:
                result = await blast(client, count, timeout_s=BLAST_TIMEOUT_S)
            print(f"  blast: {describe(result)}")
            rate = result.rate
            rows.append(
                Row(
                    label,
                    f"{rate:,.0f} req/s ({result.served:,} in {result.elapsed_s:.1f}s; "
                    f"steady {result.steady_rate:,.0f})",
                    ">= 2,000 req/s" if with_latency else "(comparison)",
                    rate >= 2000 if with_latency else None,
                )
            )
            if with_latency:
                rows.extend(await latency_at(client, rate / 2))
                rows.extend(await latency_at(client, LIGHT_LOAD, half=False))
    return rows, rate


async def latency_at(
    client: FallbackClient, rate: float, seconds: float = 10.0, *, half: bool = True
) -> list[Row]:
    """Figure 2: paced open-loop load at `rate`; latency = received - sent, client side.

    With `half` off it is the same measure at a light load (row 2a, no target)."""
    result = await paced(client, rate, seconds)
    print(f"  paced {rate:.0f} req/s: {describe(result)}")
    p50 = quantile(result.latencies_ms, 0.5)
    p99 = quantile(result.latencies_ms, 0.99)
    w50 = quantile(result.worker_latencies_ms, 0.5)
    w99 = quantile(result.worker_latencies_ms, 0.99)
    lost = result.sent - result.received
    measured = f"p50 {p50:.1f} ms, p99 {p99:.1f} ms" + (f" ({lost} unanswered)" if lost else "")
    if not half:
        return [Row(f"2a. e2e latency at {rate:,.0f} req/s (light)", measured)]
    return [
        Row(
            f"2. e2e latency at {rate:,.0f} req/s (half)",
            measured,
            "p99 < 50 ms",
            p99 < 50 and lost == 0,
        ),
        Row(
            "   worker-reported latency_ms",
            f"p50 {w50:.1f} ms, p99 {w99:.1f} ms (created_at -> response)",
        ),
    ]


async def latency_floor(broker: EmbeddedBroker, rate: float) -> list[Row]:
    """Figure 2b: the same rate through four bare relays (see bench/broker_floor.py)."""
    floor = await broker_floor(broker, rate)
    lost = floor.sent - floor.received
    print(f"  bare chain {rate:.0f} msg/s: {floor.received}/{floor.sent} through")
    return [
        Row(
            f"2b. broker floor: 4 bare hops at {rate:,.0f} msg/s",
            f"p50 {floor.p50_ms:.1f} ms, p99 {floor.p99_ms:.1f} ms, "
            f"broker CPU {floor.broker_cores:.2f} cores" + (f" ({lost} lost)" if lost else ""),
            "(no pipeline work: the least figure 2 can be here)",
        )
    ]


async def fallback_hops(broker: EmbeddedBroker, workdir: Path) -> list[Row]:
    """Figure 3: p50 when tier 1 serves, when tier 2 serves, when tier 3 serves."""
    tiers = [python_tier(name, "instant") for name in ("t1", "t2", "t3")]
    config = bench_config(broker, tiers, workdir=workdir)
    scenarios = [("t1", []), ("t2", ["t1"]), ("t3", ["t1", "t2"])]
    p50s: dict[str, float] = {}
    with workers_for(config, workdir):
        async with FallbackClient(config) as client:
            await client.listen_from_now()
            await warm_up(client, 300)
            for served_by, fail in scenarios:
                result = await paced(client, 50, 4.0, input={"fail": fail}, drain_s=5)
                p50s[served_by] = quantile(result.latencies_ms, 0.5)
                print(
                    f"  {served_by} serves: p50 {p50s[served_by]:.1f} ms, "
                    f"p99 {quantile(result.latencies_ms, 0.99):.1f} ms, {describe(result)}"
                )
    hop1 = p50s["t2"] - p50s["t1"]
    hop2 = p50s["t3"] - p50s["t2"]
    return [
        Row(
            "3. p50 latency by serving tier (50 req/s)",
            f"t1 {p50s['t1']:.1f} ms, t2 {p50s['t2']:.1f} ms, t3 {p50s['t3']:.1f} ms",
        ),
        Row("   added per fallback hop", f"+{hop1:.1f} ms (t1->t2), +{hop2:.1f} ms (t2->t3)"),
    ]


async def littles_law(broker: EmbeddedBroker, workdir: Path, processes: int = 1) -> list[Row]:
    """Figure 4: 200 ms model, 200 in flight in all; bound = 200 / 0.2 s = 1,000 req/s.

    `max_in_flight` is per worker, so with several workers each gets its share."""
    tier = python_tier("slow", "fixed_200ms", max_in_flight=200 // processes)
    config = bench_config(broker, [tier], workdir=workdir)
    with workers_for(config, workdir, processes):
        async with FallbackClient(config) as client:
            await client.listen_from_now()
            await warm_up(client, 400)
            result = await blast(client, 8000, timeout_s=40)
    print(f"  blast: {describe(result)}")
    share = result.steady_rate / 1000
    return [
        Row(
            f"4. Little's law, 200 ms x 200 in flight ({processes} x {200 // processes})",
            f"{result.steady_rate:,.0f} req/s steady ({result.rate:,.0f} overall) "
            f"= {share:.0%} of 1,000",
            ">= 90%",
            share >= 0.9,
        )
    ]
