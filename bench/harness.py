"""What every benchmark shares: a config, a running worker, and load drivers.

The broker (Tansu, embedded) is started once per run by `bench.run`; each
benchmark starts its own worker process on its own topics and consumer group,
waits until every partition is assigned, warms the path up, then measures.
Load is driven from this process with `FallbackClient` (its producer; the
responses are read straight off its consumer so the client's own CPU stays
small next to the worker's on a 2-core machine).  Every loop is bounded in
count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from streams.config import FallbackConfig, parse_config
from streams.ops.broker import EmbeddedBroker, free_port
from streams.ops.client import FallbackClient
from streams.ops.worker_process import WorkerProcess, running_worker

PARTITIONS = 4
_runs = itertools.count(1)


def python_tier(name: str, function: str, **overrides: Any) -> dict[str, Any]:
    """A tier served by `bench.models:<function>`; circuit off so a scripted
    failure always costs a real hop (an open circuit would skip the call)."""
    tier: dict[str, Any] = {
        "name": name,
        "adapter": {
            "kind": "python",
            "callable": f"bench.models:{function}",
            "options": {"tier": name} if function == "instant" else {},
        },
        "price": {"per_call_usd": 0.0001},
        "timeout_ms": 2000,
        "max_in_flight": 500,
        "accept": {"max_latency_ms": 1000, "min_confidence": 0.5},
        "circuit": {"enabled": False},
    }
    tier.update(overrides)
    return tier


def bench_config(
    broker: EmbeddedBroker,
    tiers: list[dict[str, Any]],
    *,
    analytics: bool = False,
    workdir: Path,
    partitions: int = PARTITIONS,
    topic_rotation_s: float | None = 0,
    session_timeout_s: float = 6,
) -> FallbackConfig:
    """Own topics, group, web port and chDB directory per benchmark (as tests/conftest.py).
    Plain topic names unless `topic_rotation_s` (None: the embedded broker's
    default): the figures are short runs, compared with earlier ones, and real
    Kafka has no rotation."""
    run = f"b{next(_runs)}-{uuid.uuid4().hex[:6]}"
    return parse_config(
        {
            "kafka": {
                "bootstrap_servers": broker.bootstrap_servers,
                "topic_prefix": f"{run}.",
                "partitions": partitions,
                "session_timeout_s": session_timeout_s,
                "heartbeat_interval_s": 0.5,
                "rebalance_timeout_s": 6,
                "commit_interval_s": 1.0,
                "topic_rotation_s": topic_rotation_s,
            },
            "worker": {
                "app_id": f"bench-{run}",
                "web_port": free_port(),
                "data_dir": str(workdir / run / "data"),
            },
            "analytics": {
                "enabled": analytics,
                "chdb_path": str(workdir / run / "chdb"),
                "batch_max_wait_ms": 1000,
            },
            "tiers": tiers,
        }
    )


def stage_partitions(config: FallbackConfig) -> int:
    """Partitions the stage consumers share: requests, tier.* and attempts.* (+ sink)."""
    topics = 1 + 2 * len(config.tiers) + (2 if config.analytics.enabled else 0)
    return topics * config.kafka.partitions


@contextlib.contextmanager
def workers_for(
    config: FallbackConfig, workdir: Path, processes: int = 1
) -> Iterator[list[WorkerProcess]]:
    """`processes` workers of one group (own web ports), every stage partition assigned.

    Several processes on one machine is how a Python worker uses more than one
    core; each reads its share of the partitions."""
    configs = [config] + [
        config.model_copy(
            update={"worker": config.worker.model_copy(update={"web_port": free_port()})}
        )
        for _ in range(processes - 1)
    ]
    with contextlib.ExitStack() as stack:
        workers = [stack.enter_context(running_worker(c, workdir)) for c in configs]
        wait_assigned(workers, stage_partitions(config))
        yield workers


def wait_assigned(workers: list[WorkerProcess], partitions: int, timeout_s: float = 90) -> None:
    """Until every worker is ready and together they hold every stage partition."""
    deadline = time.monotonic() + timeout_s
    while True:
        healths = [w.wait_ready(timeout_s=max(deadline - time.monotonic(), 1)) for w in workers]
        held = sum(h.get("stage_partitions", 0) for h in healths)
        if held >= partitions:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers hold {held} of {partitions} partitions")
        time.sleep(0.2)


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="fallback-bench-"))


# ------------------------------------------------------------------ load ----


def request(request_id: str, input: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "tenant": "bench",
        "input": input or {"prompt": "hi"},
        "created_at": datetime.now(UTC).isoformat(),
    }


@dataclass
class LoadResult:
    sent: int
    received: int = 0
    served: int = 0
    first_send: float = 0.0
    last_receive: float = 0.0
    #: client side: response received - request sent (ms)
    latencies_ms: list[float] = field(default_factory=list)
    #: the worker's own figure in the response (created_at -> response built)
    worker_latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    received_at: list[float] = field(default_factory=list)

    @property
    def elapsed_s(self) -> float:
        return max(self.last_receive - self.first_send, 1e-9)

    @property
    def rate(self) -> float:
        return self.served / self.elapsed_s

    @property
    def steady_rate(self) -> float:
        """Responses per second between the 10th and 90th percentile arrivals (no ramps)."""
        times = sorted(self.received_at)
        if len(times) < 20:
            return self.rate
        lo, hi = len(times) // 10, len(times) * 9 // 10
        return (hi - lo) / max(times[hi] - times[lo], 1e-9)


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


class Receiver:
    """Reads responses off the client's consumer and times them against send times."""

    def __init__(self, client: FallbackClient, sent_at: dict[str, float]) -> None:
        self.client = client
        self.sent_at = sent_at
        self.result = LoadResult(sent=0)
        self.seen: set[str] = set()

    async def run(self, expected: int, timeout_s: float, idle_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        idle_deadline = time.monotonic() + idle_s
        while len(self.seen) < expected and time.monotonic() < min(deadline, idle_deadline):
            batch = await self.client.read_batch(timeout_ms=50)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    key = record.key.decode() if record.key else ""
                    if key in self.seen or key not in self.sent_at:
                        continue
                    self.seen.add(key)
                    idle_deadline = time.monotonic() + idle_s
                    body = json.loads(record.value)
                    status = body.get("status", "?")
                    self.result.statuses[status] = self.result.statuses.get(status, 0) + 1
                    self.result.received += 1
                    self.result.last_receive = now
                    self.result.received_at.append(now)
                    if status == "served":
                        self.result.served += 1
                    self.result.latencies_ms.append((now - self.sent_at[key]) * 1000)
                    self.result.worker_latencies_ms.append(float(body.get("latency_ms", 0.0)))


async def blast(
    client: FallbackClient, count: int, *, timeout_s: float, input: dict[str, Any] | None = None
) -> LoadResult:
    """Send `count` requests as fast as the broker takes them; wait for the responses.

    The load generator shares the cores with the workers, so every request is
    encoded and packed into per-partition record batches (the producer's own
    format and partitioner) before the clock starts: sending them one by one
    kept a core busy for ~3 s of a 30 s run (`created_at` is then up to a
    second early, which no throughput figure reads)."""
    sent_at: dict[str, float] = {}
    receiver = Receiver(client, sent_at)
    tag = uuid.uuid4().hex[:8]
    topic = client.topics.requests
    batches = await packed_batches(client, topic, [f"{tag}-{i}" for i in range(count)], input)
    receiving = asyncio.create_task(receiver.run(count, timeout_s, idle_s=min(timeout_s, 15.0)))
    first = time.perf_counter()
    for partition, ids, batch in batches:
        now = time.perf_counter()
        for request_id in ids:
            sent_at[request_id] = now
        await client.producer.send_batch(batch, topic, partition=partition)
        await asyncio.sleep(0)  # let the receiver drain while we send
    await client.producer.flush()
    await receiving
    result = receiver.result
    result.sent = count
    result.first_send = first
    return result


async def packed_batches(
    client: FallbackClient, topic: str, ids: list[str], input: dict[str, Any] | None
) -> list[tuple[int, list[str], Any]]:
    """(partition, request ids, closed record batch) for every request, keyed as
    `FallbackClient.send` would key them."""
    producer = client.producer
    partitions = sorted(await producer.partitions_for(topic))
    partitioner = DefaultPartitioner()
    batches: list[tuple[int, list[str], Any]] = []
    open_batches: dict[int, tuple[list[str], Any]] = {}
    for request_id in ids:
        key = request_id.encode()
        body = json.dumps(request(request_id, input)).encode()
        partition = partitioner(key, partitions, partitions)
        batch_ids, batch = open_batches.get(partition) or ([], producer.create_batch())
        if batch.append(key=key, value=body, timestamp=None) is None:  # full
            batch.close()
            batches.append((partition, batch_ids, batch))
            batch_ids, batch = [], producer.create_batch()
            batch.append(key=key, value=body, timestamp=None)
        batch_ids.append(request_id)
        open_batches[partition] = (batch_ids, batch)
    for partition, (batch_ids, batch) in open_batches.items():
        batch.close()
        batches.append((partition, batch_ids, batch))
    return batches


async def paced(
    client: FallbackClient,
    rate_per_s: float,
    duration_s: float,
    *,
    input: dict[str, Any] | None = None,
    drain_s: float = 10.0,
) -> LoadResult:
    """Open loop: request i is sent at t0 + i/rate whatever the responses do."""
    count = max(int(rate_per_s * duration_s), 1)
    sent_at: dict[str, float] = {}
    receiver = Receiver(client, sent_at)
    tag = uuid.uuid4().hex[:8]
    receiving = asyncio.create_task(receiver.run(count, duration_s + drain_s, idle_s=drain_s))
    start = time.perf_counter()
    for i in range(count):
        due = start + i / rate_per_s
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        request_id = f"{tag}-{i}"
        sent_at[request_id] = time.perf_counter()
        await client.send(request(request_id, input))
    await client.producer.flush()
    await receiving
    result = receiver.result
    result.sent = count
    result.first_send = start
    return result


async def warm_up(client: FallbackClient, count: int = 300) -> LoadResult:
    return await blast(client, count, timeout_s=30)
