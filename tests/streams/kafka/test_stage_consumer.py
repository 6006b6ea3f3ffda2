"""StageConsumer's own rules, in-process: a fake consumer and producer stand in
for aiokafka's (only the handful of methods the stage consumer calls); the
records, offsets, stages and the consumer's logic are the real ones."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiokafka import TopicPartition

from streams.kafka.consumed_record import ConsumedRecord
from streams.kafka.stage_consumer import ErrorOutcome, Stage, StageConsumer


@dataclass
class FakeConsumer:
    """The part of AIOKafkaConsumer the stage consumer uses, recorded."""

    assigned: set[TopicPartition]
    paused: set[TopicPartition] = field(default_factory=set)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    stopped: bool = False

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    async def stop(self) -> None:
        self.stopped = True

    @property
    def committed(self) -> dict[TopicPartition, int]:
        merged: dict[TopicPartition, int] = {}
        for offsets in self.commits:
            merged.update(offsets)
        return merged


class FakeProducer:
    async def flush(self) -> None:
        return None


@dataclass
class Message:
    """What the stage consumer reads of aiokafka's ConsumerRecord."""

    offset: int
    key: bytes | None = None
    value: bytes = b"{}"
    headers: tuple[tuple[str, bytes], ...] = ()


def batch(tp: TopicPartition, offsets: range) -> dict[TopicPartition, list[Message]]:
    return {tp: [Message(offset) for offset in offsets]}


class Gated:
    """A handler whose records finish only when the test says so: records are
    named (partition, offset); `started` lists them as their handlers start."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []
        self.gates: dict[tuple[int, int], asyncio.Event] = {}

    async def __call__(self, record: ConsumedRecord) -> None:
        name = (record.partition, record.offset)
        self.started.append(name)
        await self.gates.setdefault(name, asyncio.Event()).wait()

    async def release(self, *names: tuple[int, int]) -> None:
        for name in names:
            self.gates.setdefault(name, asyncio.Event()).set()
        await settle()


async def settle() -> None:
    """Let every ready task run to its next wait."""
    for _ in range(10):
        await asyncio.sleep(0)


async def done(record: ConsumedRecord) -> None:
    return None


def stage_consumer(
    stages: list[Stage],
    on_error: Callable[[ConsumedRecord, Exception, str], Awaitable[ErrorOutcome]] | None = None,
) -> tuple[StageConsumer, FakeConsumer]:
    async def settled(record: ConsumedRecord, exc: Exception, stage: str) -> ErrorOutcome:
        return ErrorOutcome.SETTLED

    consumer = StageConsumer(
        stages=stages,
        consumer_options={},
        producer=FakeProducer(),
        delivery_problem=lambda: None,
        on_error=on_error or settled,
        rebalance_timeout_s=1.0,
    )
    fake = FakeConsumer({TopicPartition(s.topic, p) for s in stages for p in (0, 1)})
    consumer.consumer = fake
    return consumer, fake


async def test_a_batch_is_handled_later_stages_first() -> None:
    order: list[str] = []

    def handler(name: str) -> Callable[[ConsumedRecord], Awaitable[None]]:
        async def handle(record: ConsumedRecord) -> None:
            order.append(f"{name}@{record.offset}")

        return handle

    stages = [
        Stage("route", "requests", handler("route"), 100, entry=True),
        Stage("evaluate", "attempts", handler("evaluate"), 100, priority=2),
        Stage("sink", "verdicts", handler("sink"), 100, priority=3),
        Stage("call", "tier", handler("call"), 100, priority=1),
    ]
    consumer, _ = stage_consumer(stages)
    fetched = {
        **batch(TopicPartition("requests", 0), range(2)),
        **batch(TopicPartition("tier", 0), range(1)),
        **batch(TopicPartition("attempts", 0), range(1)),
        **batch(TopicPartition("verdicts", 0), range(1)),
    }
    await consumer.handle_batch(fetched)
    # Within a stage, fetch order; across stages, the furthest along first.
    assert order == ["sink@0", "evaluate@0", "call@0", "route@0", "route@1"]


async def test_partitions_pause_at_the_window_and_resume_below_it() -> None:
    """A stage holding `window` unfinished records pauses all its partitions, and
    resumes them as soon as one finishes (here: a sink row becoming durable)."""
    durable: dict[int, asyncio.Future[None]] = {}

    async def sink(record: ConsumedRecord) -> asyncio.Future[None]:
        durable[record.offset] = asyncio.get_running_loop().create_future()
        return durable[record.offset]

    stage = Stage("sink", "verdicts", sink, window=3)
    consumer, fake = stage_consumer([stage])
    tps = {TopicPartition("verdicts", 0), TopicPartition("verdicts", 1)}
    await consumer.handle_batch(batch(TopicPartition("verdicts", 0), range(2)))
    assert not fake.paused  # 2 of 3: room left
    await consumer.handle_batch(batch(TopicPartition("verdicts", 1), range(1)))
    assert fake.paused == tps  # 3 of 3: every partition of the stage pauses
    durable[0].set_result(None)
    await settle()
    assert not fake.paused  # 2 of 3 again
    assert consumer.in_flight() == {"sink": 2}


async def test_a_concurrent_stage_runs_window_records_and_queues_the_rest() -> None:
    calls = Gated()
    stage = Stage("call", "tier", calls, window=2, concurrent=True)
    consumer, fake = stage_consumer([stage])
    tp = TopicPartition("tier", 0)
    await consumer.handle_batch(batch(tp, range(5)))
    await settle()
    assert [o for _, o in calls.started] == [0, 1]  # window full: 2, 3, 4 wait in the backlog
    assert consumer.queued_in_pipeline() == 3
    assert tp in fake.paused
    await calls.release((0, 1))
    assert [o for _, o in calls.started] == [0, 1, 2]  # a freed slot takes the oldest waiting
    assert tp in fake.paused  # while records wait, the partition stays paused
    await calls.release((0, 0), (0, 2))
    assert [o for _, o in calls.started] == [0, 1, 2, 3, 4]
    assert tp in fake.paused  # nothing waits, but 3 and 4 fill the window
    await calls.release((0, 3))
    assert not fake.paused  # 1 of 2
    await calls.release((0, 4))
    assert consumer.in_flight() == {"call": 0}
    await consumer.commit()
    assert fake.committed == {tp: 5}


async def test_revocation_drops_waiting_records_and_commits_what_finished_in_time() -> None:
    calls = Gated()
    stage = Stage("call", "tier", calls, window=2, concurrent=True)
    consumer, fake = stage_consumer([stage])
    revoked, kept = TopicPartition("tier", 0), TopicPartition("tier", 1)
    await consumer.handle_batch({**batch(revoked, range(4)), **batch(kept, range(1))})
    await settle()
    assert calls.started == [(0, 0), (0, 1)]  # revoked 2, 3 and kept 0 wait

    async def finish_one_during_the_drain() -> None:
        await asyncio.sleep(0.1)
        await calls.release((0, 0))

    releaser = asyncio.create_task(finish_one_during_the_drain())
    await consumer.on_revoked({revoked})
    await releaser
    # Offset 0 finished within the drain and is committed; offset 1 is still
    # running and 2, 3 were dropped: the partition's next owner reads from 1.
    assert fake.committed == {revoked: 1}
    # The dropped records never ran; kept 0 took the freed slot.
    assert calls.started == [(0, 0), (0, 1), (1, 0)]
    assert consumer.in_flight() == {"call": 2}  # revoked 1 and kept 0, running
    assert not consumer.tracker.pending.get(revoked)
    await calls.release((0, 1), (1, 0))
    await consumer.commit()
    assert fake.committed == {revoked: 1, kept: 1}  # the late finisher commits nothing


async def test_a_record_whose_outputs_failed_stops_its_partitions_commits_only() -> None:
    """LEAVE_UNFINISHED: the record frees its slot, its partition commits up to it
    and no further (a restart re-reads it), the other partitions go on."""

    async def handle(record: ConsumedRecord) -> None:
        if record.partition == 0 and record.offset == 1:
            raise RuntimeError("delivery failed")

    errors: list[tuple[int, str]] = []

    async def leave_unfinished(record: ConsumedRecord, exc: Exception, stage: str) -> ErrorOutcome:
        errors.append((record.offset, stage))
        return ErrorOutcome.LEAVE_UNFINISHED

    stage = Stage("evaluate", "attempts", handle, window=10)
    consumer, fake = stage_consumer([stage], leave_unfinished)
    stalled_tp, other = TopicPartition("attempts", 0), TopicPartition("attempts", 1)
    await consumer.handle_batch({**batch(stalled_tp, range(4)), **batch(other, range(3))})
    await consumer.commit()
    assert errors == [(1, "evaluate")]
    assert fake.committed == {stalled_tp: 1, other: 3}
    assert consumer.stalled == 1 and consumer.in_flight() == {"evaluate": 0}
    await consumer.handle_batch(batch(stalled_tp, range(4, 6)))
    await consumer.commit()
    assert fake.committed[stalled_tp] == 1  # never past the stalled record
    assert consumer.tracker.unsettled() == 0  # nothing left to wait for on a drain


async def test_a_settled_error_counts_as_finished() -> None:
    async def handle(record: ConsumedRecord) -> None:
        raise ValueError("bad record")

    stage = Stage("evaluate", "attempts", handle, window=10)
    consumer, fake = stage_consumer([stage])  # on_error: SETTLED (dead-lettered)
    tp = TopicPartition("attempts", 0)
    await consumer.handle_batch(batch(tp, range(3)))
    await consumer.commit()
    assert fake.committed == {tp: 3} and consumer.stalled == 0


def test_a_stage_spec_cannot_be_changed() -> None:
    stage = Stage("route", "requests", done, 10)
    with pytest.raises(AttributeError):
        stage.window = 20  # type: ignore[misc]


async def test_only_one_commit_runs_at_a_time() -> None:
    stage = Stage("route", "requests", done, 10)
    consumer, fake = stage_consumer([stage])
    tp = TopicPartition("requests", 0)
    await consumer.handle_batch(batch(tp, range(2)))
    await asyncio.gather(consumer.commit(), consumer.commit())
    assert fake.commits == [{tp: 2}]  # the second found nothing new to commit


async def test_a_record_unfinished_too_long_makes_the_consumer_exit() -> None:
    """Stuck = a record still being handled or stalled since before the threshold;
    a sink row being written is the sink's business and never counts."""
    calls = Gated()
    durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def sink(record: ConsumedRecord) -> asyncio.Future[None]:
        return durable

    async def fail(record: ConsumedRecord) -> None:
        raise RuntimeError("delivery failed")

    async def leave_unfinished(record: ConsumedRecord, exc: Exception, stage: str) -> ErrorOutcome:
        return ErrorOutcome.LEAVE_UNFINISHED

    stages = [
        Stage("call", "tier", calls, window=10, concurrent=True),
        Stage("sink", "verdicts", sink, window=10),
        Stage("evaluate", "attempts", fail, window=10),
    ]
    consumer, _ = stage_consumer(stages, leave_unfinished)
    await consumer.handle_batch(
        {
            **batch(TopicPartition("tier", 0), range(2)),
            **batch(TopicPartition("tier", 1), range(1)),
            **batch(TopicPartition("verdicts", 0), range(1)),
            **batch(TopicPartition("attempts", 1), range(1)),
        }
    )
    await calls.release((0, 1), (1, 0))
    assert consumer.stuck_problem(after_s=3600) is None  # all fetched just now
    problem = consumer.stuck_problem(after_s=0)
    assert problem is not None
    assert "call: tier[0]@0 still being handled" in problem
    assert "evaluate: attempts[1]@0 stalled" in problem
    assert "tier[1]" not in problem and "verdicts" not in problem

    crashes: list[BaseException] = []

    async def crash(reason: BaseException) -> None:
        crashes.append(reason)

    consumer.crash = crash  # type: ignore[method-assign]
    await asyncio.wait_for(consumer._exit_when_stuck(0.01), timeout=5)
    assert [type(c).__name__ for c in crashes] == ["StuckConsumer"]


async def test_commits_failing_too_long_make_the_consumer_exit() -> None:
    stage = Stage("route", "requests", done, 10)
    consumer, _ = stage_consumer([stage])
    await consumer.handle_batch(batch(TopicPartition("requests", 0), range(3)))
    consumer.commit_ok_at -= 60  # as if every commit had failed for a minute
    assert consumer.stuck_problem(after_s=30) == "no commit succeeded for 60 s"
    await consumer.commit()
    assert consumer.stuck_problem(after_s=30) is None


async def test_a_stop_commits_what_finished_within_the_grace_and_drops_the_rest() -> None:
    calls = Gated()
    stage = Stage("call", "tier", calls, window=2, concurrent=True)
    consumer, fake = stage_consumer([stage])
    consumer.stop_drain_s = 0.3
    tp = TopicPartition("tier", 0)
    await consumer.handle_batch(batch(tp, range(4)))
    await settle()

    async def finish_one_during_the_grace() -> None:
        await asyncio.sleep(0.1)
        await calls.release((0, 0))

    releaser = asyncio.create_task(finish_one_during_the_grace())
    await consumer.on_stop()
    await releaser
    # 0 finished within the grace: committed.  1 ran past it: cancelled.  2 and
    # 3 waited for a slot: dropped at once.  The next owner reads from 1.
    assert fake.committed == {tp: 1} and fake.stopped
    assert calls.started == [(0, 0), (0, 1)]
    await settle()
    assert not any(state.running for state in consumer.stages.values())
    await consumer.handle_batch(batch(tp, range(4, 6)))
    assert calls.started == [(0, 0), (0, 1)]  # stopped: nothing new starts
