"""Kafka client behaviour Faust does not expose.

1. The fetch wait:
Faust hardcodes `fetch_max_wait_ms=1500` for its worker consumer; on a quiet
partition a new record then waits up to ~750 ms in the broker.  We set the
consumer's value from `kafka.fetch_max_wait_ms` right after Faust builds it,
before it starts (aiokafka reads it when the fetcher is created at start).

2. A commit guard: agents ack an event once its outputs are in the producer's
batch (see streams/publisher.py); Faust flushes the producer before each
commit, and `guard_commits` refuses the commit if any of those records failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.publisher import PublishError

_original_create_worker_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
_fetch_max_wait_ms: int | None = None


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    consumer = _original_create_worker_consumer(self, transport)
    if _fetch_max_wait_ms is not None:
        consumer._fetch_max_wait_ms = _fetch_max_wait_ms
    return consumer


def set_fetch_max_wait_ms(value: int) -> None:
    global _fetch_max_wait_ms
    _fetch_max_wait_ms = value
    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]


_commit_problem: Callable[[], str | None] | None = None
_original_commit = faust_aiokafka.Consumer._commit


async def _guarded_commit(self: Any, offsets: Any) -> bool:
    """Faust flushes the producer right before this call, so every record an
    agent enqueued for these offsets has been delivered or has failed by now."""
    problem = _commit_problem() if _commit_problem is not None else None
    if problem is not None:
        error = PublishError(f"refusing to commit offsets: {problem}")
        self.log.critical("%s", error)
        await self.crash(error)  # a restart re-reads the uncommitted events
        return False
    committed: bool = await _original_commit(self, offsets)
    return committed


def guard_commits(problem: Callable[[], str | None]) -> None:
    """Never commit an offset while `problem()` names a lost output."""
    global _commit_problem
    _commit_problem = problem
    faust_aiokafka.Consumer._commit = _guarded_commit  # type: ignore[method-assign]
