"""Figure 1h: how fast `/health/` answers while the workers are saturated.

A liveness probe with a 1 s timeout restarts a worker whose `/health/` does not
answer in time, so a busy worker must still answer it quickly.  This runs
figure 1's load (one tier, instant model, analytics off, a blast as large as
the warm-up rate sustains for `seconds`) and meanwhile polls every worker's
`/health/` from a process of its own per worker, as a probe would: a new connection
per poll, a 1 s timeout, the next poll 100 ms after the last one ended.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from bench.figures import BLAST_SECONDS, BLAST_TIMEOUT_S, MAX_REQUESTS, Row, describe
from bench.harness import bench_config, blast, python_tier, quantile, warm_up, workers_for
from streams.ops.broker import EmbeddedBroker
from streams.ops.client import FallbackClient

#: a liveness probe's usual timeout: a poll slower than this is a failed probe
PROBE_TIMEOUT_S = 1.0
POLL_PAUSE_S = 0.1
P99_TARGET_MS = 250.0


@dataclass
class HealthPolls:
    latencies_ms: list[float] = field(default_factory=list)
    timeouts: int = 0
    longest_timeout_run: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, other: HealthPolls) -> None:
        self.latencies_ms.extend(other.latencies_ms)
        self.timeouts += other.timeouts
        self.longest_timeout_run = max(self.longest_timeout_run, other.longest_timeout_run)
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count


def poll_health(url: str, stop: Any, results: Any) -> None:
    """A probe: poll `url`/health/ until `stop` is set, then put the polls on `results`."""
    polls = HealthPolls()
    run = 0
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=PROBE_TIMEOUT_S, limits=no_keepalive) as client:
        results.put(None)  # started: the load may begin
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status: int | None = client.get(url + "/health/").status_code
            except httpx.TimeoutException:
                status = None
            polls.latencies_ms.append((time.perf_counter() - started) * 1000)
            if status is None:
                run += 1
                polls.timeouts += 1
                polls.longest_timeout_run = max(polls.longest_timeout_run, run)
            else:
                run = 0
                polls.statuses[status] = polls.statuses.get(status, 0) + 1
            stop.wait(POLL_PAUSE_S)
    results.put(polls)


class HealthPoller:
    """One probe process per URL for the duration of the block (a process of
    its own, as a real probe is: the load generator's GIL does not delay it)."""

    def __init__(self, urls: list[str]) -> None:
        context = multiprocessing.get_context("spawn")
        self.polls = HealthPolls()
        self._stop = context.Event()
        self._results = context.Queue()
        self._probes = [
            context.Process(target=poll_health, args=(url, self._stop, self._results))
            for url in urls
        ]

    def __enter__(self) -> HealthPoller:
        for probe in self._probes:
            probe.start()
        for _ in self._probes:
            self._results.get(timeout=60)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for _ in self._probes:
            self.polls.add(self._results.get(timeout=PROBE_TIMEOUT_S * 10))
        for probe in self._probes:
            probe.join(timeout=PROBE_TIMEOUT_S * 3)


async def health_under_load(
    broker: EmbeddedBroker, workdir: Path, processes: int = 1, seconds: float = BLAST_SECONDS
) -> list[Row]:
    """Figure 1h: /health/ p50/p99/max and timeouts during a figure-1 blast."""
    config = bench_config(broker, [python_tier("only", "instant")], workdir=workdir)
    with workers_for(config, workdir, processes) as running:
        async with FallbackClient(config) as client:
            await client.listen_from_now()
            probe = await warm_up(client, 1000)
            count = int(min(MAX_REQUESTS, max(2000, probe.rate * seconds)))
            with HealthPoller([worker.url for worker in running]) as poller:
                result = await blast(client, count, timeout_s=BLAST_TIMEOUT_S)
    polls = poller.polls
    print(f"  blast: {describe(result)} ({result.rate:,.0f} req/s)")
    print(
        f"  /health/: {len(polls.latencies_ms)} polls, statuses {polls.statuses}, "
        f"{polls.timeouts} timeouts (longest run {polls.longest_timeout_run})"
    )
    p50 = quantile(polls.latencies_ms, 0.5)
    p99 = quantile(polls.latencies_ms, 0.99)
    longest = max(polls.latencies_ms, default=float("nan"))
    return [
        Row(
            f"1h. /health/ during the figure-1 blast ({processes} x, {result.rate:,.0f} req/s)",
            f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {longest:.0f} ms, "
            f"{polls.timeouts} of {len(polls.latencies_ms)} over {PROBE_TIMEOUT_S:.0f} s",
            f"p99 < {P99_TARGET_MS:.0f} ms, no timeouts",
            p99 < P99_TARGET_MS and polls.timeouts == 0,
        )
    ]
