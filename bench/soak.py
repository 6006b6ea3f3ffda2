"""Soak: steady load with faults injected, for minutes; does anything decay?

    python -m bench.soak [--minutes 10] [--rate 200] [--workers 1] [--rotation SECONDS]

Starts the embedded broker and worker process(es) on three python tiers with
injected errors, latency spikes and a recurring outage (so fallback, retries
and the circuit breaker all run), sends requests open-loop at `--rate`, and
prints one line per minute: requests sent and answered, served share,
client-side p50/p99, and the RSS and CPU (% of one core) of the worker(s)
and the broker. At the end
it prints RSS at start and end, and the first and last minute side by side.
Analytics is on (chDB), so the sinks read verdicts and responses too.
`--rotation` is `kafka.topic_rotation_s` (left out: the embedded broker's
default, 10 s; 0: off, to see the embedded broker slow down); the column
`gens` counts the responses generations the client reads. Figures are
printed, never asserted. Not part of `make test` or `make bench`; the
60-minute run of the embedded broker's limit is `--minutes 60`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import bench_config, python_tier, quantile, request, workdir, workers_for
from streams.ops.broker import running_broker
from streams.ops.client import FallbackClient


def rss_mib(pid: int) -> float:
    """Resident set size of one process, from /proc (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far, from /proc (Linux)."""
    try:
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


class CpuShare:
    """Each process's CPU since the last call, in % of one core."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.at = time.monotonic()
        self.seconds = [cpu_seconds(pid) for pid in pids]

    def since_last(self) -> list[float]:
        now, seconds = time.monotonic(), [cpu_seconds(pid) for pid in self.pids]
        wall = now - self.at
        shares = [100 * (b - a) / wall for a, b in zip(self.seconds, seconds, strict=True)]
        self.at, self.seconds = now, seconds
        return shares


@dataclass
class Minute:
    sent: int = 0
    answered: int = 0
    served: int = 0
    latencies_ms: list[float] = field(default_factory=list)


def soak_tiers() -> list[dict[str, object]]:
    faulty = {"error_rate": 0.05, "spike_rate": 0.02, "spike_latency_ms": 300, "seed": 3}
    outage = {**faulty, "outages": [{"start_s": 30, "duration_s": 5, "every_s": 120}]}
    circuit = {"window_s": 5, "min_calls": 20, "failure_rate": 0.5, "open_s": 2}
    return [
        python_tier(
            "primary",
            "instant",
            faults=outage,
            circuit=circuit,
            accept={"max_latency_ms": 200, "min_confidence": 0.5},
        ),
        python_tier("backup", "instant", faults=faulty, retry={"max_retries": 1}),
        python_tier("local", "instant"),
    ]


async def drive(client: FallbackClient, rate: float, minutes: int, report: object) -> list[Minute]:
    """Open loop at `rate`; responses are bucketed by the minute their request was sent."""
    sent_at: dict[str, tuple[int, float]] = {}
    buckets = [Minute() for _ in range(minutes)]
    tag = uuid.uuid4().hex[:8]
    start = time.perf_counter()
    total = int(rate * minutes * 60)
    done = asyncio.Event()

    async def receive() -> None:
        seen: set[str] = set()
        while not done.is_set() or len(seen) < len(sent_at):
            batch = await client.read_batch(timeout_ms=50, max_records=5000)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    key = record.key.decode() if record.key else ""
                    if key in seen or key not in sent_at:
                        continue
                    seen.add(key)
                    minute, at = sent_at[key]
                    bucket = buckets[minute]
                    bucket.answered += 1
                    bucket.served += json.loads(record.value).get("status") == "served"
                    bucket.latencies_ms.append((now - at) * 1000)
            if done.is_set() and time.perf_counter() - done_at[0] > 30:
                return  # a lost request would keep us waiting: give up after 30 s

    done_at = [0.0]
    receiving = asyncio.create_task(receive())
    minute_reported = 0
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        minute = min(int((time.perf_counter() - start) // 60), minutes - 1)
        if minute > minute_reported:
            report(minute_reported, buckets[minute_reported])  # type: ignore[operator]
            minute_reported = minute
        request_id = f"{tag}-{i}"
        sent_at[request_id] = (minute, time.perf_counter())
        buckets[minute].sent += 1
        await client.send(request(request_id))
    await client.producer.flush()
    done.set()
    done_at[0] = time.perf_counter()
    await receiving
    report(minutes - 1, buckets[minutes - 1])  # type: ignore[operator]
    return buckets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--rotation", type=float, default=None, help="seconds; 0: off; default: the broker's"
    )
    args = parser.parse_args()
    directory = workdir()
    with running_broker() as broker:
        config = bench_config(
            broker,
            soak_tiers(),
            workdir=directory,
            analytics=True,
            topic_rotation_s=args.rotation,
            # The embedded broker's default (Tansu holds a join for half of
            # it): joins and leaves, not rotations, rebalance.
            session_timeout_s=2,
        )
        with workers_for(config, directory, args.workers) as workers:
            pids = [w.process.pid for w in workers]
            start_rss = [round(rss_mib(pid)) for pid in pids]
            broker_start = rss_mib(broker.process.pid)
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            period = config.kafka.rotation_period(embedded_broker=True)
            rotation = f"rotation {period:g} s" if period else "no rotation"
            print(
                f"soak: {args.minutes} min at {args.rate:.0f} req/s, {len(pids)} worker(s), "
                f"{rotation}"
            )
            print(f"load average {load}; worker RSS {start_rss} MiB, broker {broker_start:.0f} MiB")
            print(
                "minute  sent  answered  served%  p50_ms  p99_ms  worker_rss_mib  broker_mib"
                "  worker_cpu%  broker_cpu%  gens"
            )
            reader: list[FallbackClient] = []
            cpu = CpuShare([*pids, broker.process.pid])

            def report(minute: int, bucket: Minute) -> None:
                rss = ", ".join(f"{rss_mib(pid):.0f}" for pid in pids)
                *worker_cpu, broker_cpu = cpu.since_last()
                served = bucket.served / bucket.sent if bucket.sent else 0.0
                print(
                    f"{minute + 1:>6}  {bucket.sent:>5}  {bucket.answered:>8}  {served:>7.1%}"
                    f"  {quantile(bucket.latencies_ms, 0.5):>6.1f}"
                    f"  {quantile(bucket.latencies_ms, 0.99):>6.1f}"
                    f"  {rss:>14}  {rss_mib(broker.process.pid):>10.0f}"
                    f"  {', '.join(f'{c:.0f}' for c in worker_cpu):>11}  {broker_cpu:>11.0f}"
                    f"  {reader[0].generations_read() if reader else 0:>4}",
                    flush=True,
                )

            async def run() -> list[Minute]:
                async with FallbackClient(config) as client:
                    reader.append(client)
                    await client.listen_from_now()
                    return await drive(client, args.rate, args.minutes, report)

            buckets = asyncio.run(run())
            end_rss = [rss_mib(pid) for pid in pids]
            sent = sum(b.sent for b in buckets)
            answered = sum(b.answered for b in buckets)
            first, last = buckets[0], buckets[-1]
            print(f"\nrequests {sent}, answered {answered}, lost {sent - answered}")
            print(f"worker RSS start {start_rss} MiB, end {[round(r) for r in end_rss]} MiB")
            print(
                f"broker RSS start {broker_start:.0f} MiB, end "
                f"{rss_mib(broker.process.pid):.0f} MiB"
            )
            print(
                f"p99 first minute {quantile(first.latencies_ms, 0.99):.1f} ms, "
                f"last minute {quantile(last.latencies_ms, 0.99):.1f} ms; answered/s "
                f"{first.answered / 60:.0f} -> {last.answered / 60:.0f}"
            )


if __name__ == "__main__":
    main()
