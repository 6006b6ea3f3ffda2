"""`make bench`: start the embedded broker, run every figure, print a summary table.

    python -m bench.run [--only 1,1a,1b,1h,3,4,5,startup] [--workers N] [--profile DIR]

Figures are printed, never asserted.  Each figure runs its own worker process
(own topics and consumer group) against one shared embedded broker.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from pathlib import Path

from bench.figures import (
    Profiler,
    Row,
    fallback_hops,
    latency_floor,
    littles_law,
    throughput,
)
from bench.gateway import gateway_figures
from bench.harness import workdir
from bench.health import health_under_load
from bench.startup import startup
from streams.ops.broker import running_broker


def print_table(rows: list[Row]) -> None:
    width = max(len(r.figure) for r in rows)
    measured = max(len(r.measured) for r in rows)
    print()
    print(f"{'figure':<{width}}  {'measured':<{measured}}  target")
    print("-" * (width + measured + 24))
    for row in rows:
        verdict = "" if row.met is None else ("  [met]" if row.met else "  [MISSED]")
        print(f"{row.figure:<{width}}  {row.measured:<{measured}}  {row.target}{verdict}")


async def run(only: set[str], profile: Path | None, processes: int) -> list[Row]:
    rows: list[Row] = []
    directory = workdir()
    profiler = Profiler(profile)
    pipeline_rate: float | None = None
    with running_broker() as broker:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"broker {broker.bootstrap_servers}, scratch {directory}")
        print(f"{os.cpu_count()} cpus, load average before start {load}")
        if only & {"1", "2"}:
            print(f"figure 1 + 2: one tier, instant model, analytics off, {processes} worker(s)")
            found, rate = await throughput(
                broker, directory, analytics=False, processes=processes, profiler=profiler
            )
            rows.extend(found)
            pipeline_rate = rate
            print("figure 2b: the broker's floor at figure 2's rate (workers stopped)")
            rows.extend(await latency_floor(broker, rate / 2))
        if "1a" in only and processes > 1:
            print("figure 1a: same with one worker process")
            found, _ = await throughput(
                broker, directory, analytics=False, profiler=profiler, with_latency=False
            )
            rows.extend(found)
        if "1b" in only:
            # chDB is single-process: one worker holds the analytics directory.
            print("figure 1b: one worker with analytics (chDB sink) on")
            found, _ = await throughput(
                broker, directory, analytics=True, profiler=profiler, with_latency=False
            )
            rows.extend(found)
        if "1h" in only:
            print(f"figure 1h: /health/ during the figure-1 blast, {processes} worker(s)")
            rows.extend(await health_under_load(broker, directory, processes))
        if "3" in only:
            print("figure 3: three tiers, fallback hops")
            rows.extend(await fallback_hops(broker, directory))
        if "4" in only:
            print("figure 4: 200 ms model, 200 in flight")
            rows.extend(await littles_law(broker, directory, processes))
        if "5" in only:
            print(f"figure 5: the HTTP gateway, instant model, {processes} worker(s)")
            rows.extend(await gateway_figures(broker, directory, processes, pipeline_rate))
        if "startup" in only:
            print("start-up: `fallback worker` spawned -> ready line -> first served request")
            rows.extend(await startup(broker, directory))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="1,1a,1b,1h,3,4,5,startup", help="figures to run (2 runs with 1)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes for figures 1, 2 and 4 (default: one per core)",
    )
    parser.add_argument("--profile", type=Path, default=None, help="py-spy raw output directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    rows = asyncio.run(run(set(args.only.split(",")), args.profile, args.workers))
    print_table(rows)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n(total {time.monotonic() - started:.0f}s; load average now {load})")
    print("(other processes on the machine compete with broker, worker and client for CPU)")


if __name__ == "__main__":
    main()
