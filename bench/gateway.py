"""Gateway figures (issue 12, item 7): the gateway's own overhead and its throughput.

    5.  gateway overhead = HTTP round trip - the pipeline's latency_ms, p50/p99,
        at a light load (5) and at half of the gateway's capacity (5a)
    5b. served requests/s through one gateway process, closed loop, and the
        gateway's CPU per call (the pipeline, not the gateway, bounds the rate
        here: its CPU per call says what one gateway core could carry)

One instant tier, the same worker processes as figure 1, one gateway child
process.  The load generator is aiohttp's client in this process (cheaper per
call than httpx or the openai SDK: this machine's cores are shared by the
broker, the workers, the gateway and the generator).  `latency_ms` comes back
in the `x-fallback-latency-ms` header: from the request's `created_at`, which
the gateway stamps on receipt, to the evaluator's decision.  So the overhead
is the HTTP exchange, the gateway's parsing and encoding, and the response's
hop over `<prefix>responses` to the gateway; the gateway's `Server-Timing`
header gives that hop per call, so the row splits the two.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.figures import Row
from bench.harness import bench_config, python_tier, quantile, workers_for
from streams.config.models import GatewayConfig
from streams.gateway.process import GatewayProcess, running_gateway
from streams.ops.broker import EmbeddedBroker, free_port

BENCH_KEY = "sk-bench-gateway-0123456789abcdef0123456789abcdef"
LIGHT_RATE = 50.0
PACED_SECONDS = 10.0
CAPACITY_SECONDS = 15.0
#: closed-loop callers for the capacity figure (keep-alive connections)
CAPACITY_CALLERS = 256
BODY = {"model": "fallback", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class HttpLoad:
    sent: int = 0
    served: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    round_trips_ms: list[float] = field(default_factory=list)
    overheads_ms: list[float] = field(default_factory=list)
    #: the responses topic's hop (Server-Timing), part of the overhead
    hops_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    def describe(self) -> str:
        return (
            f"{self.served}/{self.sent} served in {self.elapsed_s:.1f}s, statuses {self.statuses}"
        )


async def one_call(session: aiohttp.ClientSession, url: str, load: HttpLoad) -> None:
    load.sent += 1
    started = time.perf_counter()
    try:
        async with session.post(url, json=BODY) as response:
            await response.read()
            round_trip_ms = (time.perf_counter() - started) * 1000
            load.statuses[response.status] = load.statuses.get(response.status, 0) + 1
            if response.status == 200:
                load.served += 1
                load.round_trips_ms.append(round_trip_ms)
                pipeline_ms = float(response.headers["x-fallback-latency-ms"])
                load.overheads_ms.append(round_trip_ms - pipeline_ms)
                load.hops_ms.append(
                    server_timing(response.headers["Server-Timing"])["responses-hop"]
                )
    except aiohttp.ClientError:
        load.statuses[-1] = load.statuses.get(-1, 0) + 1


def server_timing(header: str) -> dict[str, float]:
    """`pipeline;dur=12.3, responses-hop;dur=4.1` -> {"pipeline": 12.3, ...}"""
    timings = {}
    for metric in header.split(","):
        name, _, duration = metric.strip().partition(";dur=")
        timings[name] = float(duration)
    return timings


def session_for(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {BENCH_KEY}"},
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def paced_calls(url: str, rate: float, seconds: float) -> HttpLoad:
    """Open loop: call i starts at t0 + i/rate whatever the answers do."""
    load = HttpLoad()
    count = max(int(rate * seconds), 1)
    async with session_for(512) as session:
        tasks = []
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one_call(session, url, load)))
        await asyncio.gather(*tasks)
        load.elapsed_s = time.perf_counter() - start
    return load


async def closed_loop(url: str, callers: int, seconds: float) -> HttpLoad:
    """`callers` loops, each sending its next call when the last one is answered."""
    load = HttpLoad()
    async with session_for(callers) as session:
        stop_at = time.perf_counter() + seconds

        async def caller() -> None:
            while time.perf_counter() < stop_at:
                await one_call(session, url, load)

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        load.elapsed_s = time.perf_counter() - start
    return load


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def overhead_row(label: str, load: HttpLoad) -> Row:
    p50, p99 = quantile(load.overheads_ms, 0.5), quantile(load.overheads_ms, 0.99)
    rt50, rt99 = quantile(load.round_trips_ms, 0.5), quantile(load.round_trips_ms, 0.99)
    hop50, hop99 = quantile(load.hops_ms, 0.5), quantile(load.hops_ms, 0.99)
    own = [o - h for o, h in zip(load.overheads_ms, load.hops_ms, strict=True)]
    lost = load.sent - load.served
    return Row(
        label,
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (round trip p50 {rt50:.1f}, p99 {rt99:.1f}); "
        f"of it the responses hop p50 {hop50:.1f}, p99 {hop99:.1f}, the HTTP side "
        f"p50 {quantile(own, 0.5):.1f}, p99 {quantile(own, 0.99):.1f}"
        + (f" ({lost} not served)" if lost else ""),
        "p99 <= 5 ms" if "light" in label else "",
        (p99 <= 5 and lost == 0) if "light" in label else None,
    )


async def gateway_figures(
    broker: EmbeddedBroker, workdir: Path, processes: int, pipeline_rate: float | None
) -> list[Row]:
    config = bench_config(broker, [python_tier("only", "instant")], workdir=workdir)
    gateway = GatewayConfig.model_validate(
        {
            "port": free_port(),
            "keys": [
                {
                    "name": "bench",
                    "tenant": "bench",
                    "key_sha256": hashlib.sha256(BENCH_KEY.encode()).hexdigest(),
                }
            ],
        }
    )
    config = config.model_copy(update={"gateway": gateway})
    rows: list[Row] = []
    with workers_for(config, workdir, processes), running_gateway(config, workdir) as process:
        await asyncio.to_thread(process.wait_ready, 60)
        url = process.base_url + "/chat/completions"
        warm = await closed_loop(url, 16, 3.0)
        print(f"  warm-up: {warm.describe()}")
        light = await paced_calls(url, LIGHT_RATE, PACED_SECONDS)
        print(f"  paced {LIGHT_RATE:.0f} req/s: {light.describe()}")
        rows.append(overhead_row(f"5. gateway overhead at {LIGHT_RATE:.0f} req/s (light)", light))
        capacity, cores = await measured_capacity(process, url)
        rate = capacity.served / capacity.elapsed_s
        print(f"  closed loop, {CAPACITY_CALLERS} callers: {capacity.describe()}")
        half = await paced_calls(url, rate / 2, PACED_SECONDS)
        print(f"  paced {rate / 2:.0f} req/s: {half.describe()}")
        rows.append(overhead_row(f"5a. gateway overhead at {rate / 2:,.0f} req/s (half)", half))
        share = f" = {rate / pipeline_rate:.0%} of figure 1" if pipeline_rate else ""
        rows.append(
            Row(
                f"5b. served req/s through one gateway ({processes} worker(s))",
                f"{rate:,.0f} req/s{share}; gateway CPU {cores:.2f} cores "
                f"= {cores / max(rate, 1e-9) * 1000:.2f} ms per call",
                ">= 50% of figure 1" if pipeline_rate else "(run with figure 1 for the ratio)",
                rate >= pipeline_rate / 2 if pipeline_rate else None,
            )
        )
    return rows


async def measured_capacity(process: GatewayProcess, url: str) -> tuple[HttpLoad, float]:
    """The closed-loop run, and the gateway process's CPU (cores) during it."""
    cpu_before, wall_before = cpu_seconds(process.process.pid), time.perf_counter()
    load = await closed_loop(url, CAPACITY_CALLERS, CAPACITY_SECONDS)
    cores = (cpu_seconds(process.process.pid) - cpu_before) / (time.perf_counter() - wall_before)
    return load, cores
