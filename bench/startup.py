"""Start-up: `fallback worker` spawned -> its ready line -> its first served request.

A fresh config each run (own topics, own group) with the product's defaults,
one instant Python tier, analytics off.  The caller is listening before the
worker starts and sends one request the moment the process is spawned; the
request waits in the requests topic until the worker has its partitions.
Measured: process spawn -> the ready line in the worker's output (at the
default log level) -> the first response, served.

    python -m bench.startup [--runs N]     (also part of `make bench`)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.figures import Row
from bench.harness import python_tier, workdir
from streams.config import FallbackConfig, parse_config
from streams.kafka.client_options import kafka_client_options
from streams.kafka.topics import pipeline_topics
from streams.ops.broker import EmbeddedBroker, free_port, running_broker
from streams.ops.client import FallbackClient
from streams.ops.worker import READY_LINE_PREFIX
from streams.ops.worker_process import start_worker_process
from topics.declare import declare_topics

#: the figure issue 9 sets: spawn to first served request
TARGET_S = 3.0
RUN_TIMEOUT_S = 60.0


@dataclass
class StartupRun:
    ready_s: float | None
    first_served_s: float | None


def startup_config(broker: EmbeddedBroker, directory: Path) -> FallbackConfig:
    run = f"s-{uuid.uuid4().hex[:6]}"
    return parse_config(
        {
            "kafka": {"bootstrap_servers": broker.bootstrap_servers, "topic_prefix": f"{run}."},
            "worker": {
                "app_id": f"startup-{run}",
                "web_port": free_port(),
                "data_dir": str(directory / run / "data"),
            },
            "analytics": {"enabled": False},
            "tiers": [python_tier("primary", "instant")],
        }
    )


async def one_start(broker: EmbeddedBroker, directory: Path) -> StartupRun:
    config = startup_config(broker, directory)
    # Topics first, so the caller can listen before the worker exists (the
    # worker declares them again: a lookup, they exist).
    await declare_topics(pipeline_topics(config).specs, kafka_client_options(config.kafka))
    request_id = f"startup-{uuid.uuid4().hex[:8]}"
    async with FallbackClient(config) as client:
        await client.listen_from_now()
        spawned = time.monotonic()
        worker = start_worker_process(config, directory)  # the CLI's default log level
        try:
            await client.send(
                {"request_id": request_id, "tenant": "bench", "input": {"prompt": "hi"}}
            )
            await client.producer.flush()
            ready_s = first_s = None
            consumer = client.consumer
            assert consumer is not None
            while first_s is None and time.monotonic() - spawned < RUN_TIMEOUT_S:
                batch = await consumer.getmany(timeout_ms=20)
                now = time.monotonic()
                if ready_s is None and READY_LINE_PREFIX in worker.log_tail(200):
                    ready_s = now - spawned
                for records in batch.values():
                    for record in records:
                        if record.key == request_id.encode():
                            status = json.loads(record.value).get("status")
                            if status == "served":
                                first_s = now - spawned
                if worker.process.poll() is not None:
                    raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
            if ready_s is None and READY_LINE_PREFIX in worker.log_tail(200):
                ready_s = time.monotonic() - spawned
            return StartupRun(ready_s, first_s)
        finally:
            worker.stop()


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


async def startup(broker: EmbeddedBroker, directory: Path, runs: int = 3) -> list[Row]:
    found = []
    for number in range(1, runs + 1):
        run = await one_start(broker, directory)
        found.append(run)
        load = os.getloadavg()[0]
        print(
            f"  start {number}: ready line {seconds(run.ready_s)}, "
            f"first served request {seconds(run.first_served_s)} (load {load:.1f})"
        )
    firsts = [r.first_served_s for r in found if r.first_served_s is not None]
    readies = [r.ready_s for r in found if r.ready_s is not None]
    median_first = statistics.median(firsts) if len(firsts) == runs else None
    median_ready = statistics.median(readies) if readies else None
    return [
        Row(
            "start-up: spawn -> ready line -> first served",
            f"{seconds(median_ready)} -> {seconds(median_first)} (median of {runs})",
            f"<= {TARGET_S:.0f} s",
            None if median_first is None else median_first <= TARGET_S,
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    async def run() -> list[Row]:
        with running_broker() as broker:
            return await startup(broker, workdir(), args.runs)

    for row in asyncio.run(run()):
        print(f"{row.figure}: {row.measured} (target {row.target})")


if __name__ == "__main__":
    main()
