"""The pipeline's stages read their topics in batches through one Kafka consumer.

Why not one Faust agent per stage: Faust hands every record through its own
consumer thread, conductor, channel queue and stream iterator one at a time.
On this 2-core machine a bare Faust echo hop (consume one, produce one) moved
about 2,000 records/s; the same hop reading batches with aiokafka's
`getmany` moved about 20,000.  A request takes three hops (router, tier,
evaluator) plus two sink reads, so the per-record path decided the
throughput of the whole system.  Faust still runs the worker around this
service: lifecycle and signals, the web pages and the producer (its own
Kafka consumer is off; tenant spend is streams/state/replicated_table.py).

What a stage promises, and what this service guarantees in return:

- A handler returns once the record's outputs are in the producer's batch
  (`Publisher.enqueue`), or returns a future when the record is only durable
  later (the ClickHouse sink: once its row is written).
- A record is committable once it and every earlier record of its partition
  are finished (`OffsetTracker`; see faust-streaming #606 in inflight.py).
- A commit first flushes the producer and refuses, crashing the worker, if
  any enqueued record failed delivery: a restart then re-reads the events.
- A concurrent stage (model calls) runs each record in its own task, at most
  `window` at once; the rest wait in a backlog and the stage's partitions are
  paused, so a slow tier never blocks the other stages' partitions.  Other
  stages run their records one by one in fetch order: they only do CPU work.
- Within a fetched batch, later stages go first (evaluators before tiers
  before the router), and each fetch takes at most
  `kafka.max_partition_fetch_bytes` per partition: a flood of new requests
  then cannot hold back the requests already under way.  For the same reason
  the entry stage (router) pauses while more than `max_queued_records` wait
  in the later stages' partitions: new requests wait in their topic.
- On a rebalance, running work gets a bounded time to finish and be
  committed before the revoked partitions go.
- A stuck partition stops the worker (exit code 1) for its supervisor to
  restart: one whose oldest unfinished record has been handled (or stalled)
  for `stuck_after_s`, or no commit succeeding for that long while offsets
  wait.  A restart re-reads what was not committed.
- Record handling takes bounded turns on the event loop (`Turns`,
  streams/kafka/turns.py), so /health/ and the producer's I/O are served
  between them however much work is ready.
- With topic rotation (docs/topic-rotation.md) a membership group shares out
  the stages' plain topics, and the consumer assigns itself those partitions
  of every topic it follows (generations, and the plain requests and
  responses): a new generation is no rebalance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from schemas.errors import FallbackError
from streams.kafka.consumed_record import ConsumedRecord
from streams.kafka.offsets import InFlightRecord, OffsetTracker
from streams.kafka.publisher import PublishError
from streams.kafka.turns import Turns
from streams.observability.tracing import traced
from topics.generations import split_generation

log = logging.getLogger(__name__)

#: records one fetch hands over at most; bounds how far a stage overshoots its window
FETCH_MAX_RECORDS = 1000
#: on revocation, how long running work may take to finish at most
REVOKE_DRAIN_S = 5.0
#: of the shutdown grace, what running work does not get: the final commit,
#: leaving the group, the rest of Faust's stop, and mode closing the event loop
#: (which alone sleeps 1 s); 1.1-1.8 s measured after the drain
STOP_RESERVE_S = 2.0
#: record handling per event-loop iteration at most (streams/kafka/turns.py):
#: the trade between /health/ latency and throughput.  In paired figure-1h runs
#: 5 ms kept /health/ p99 at 49-61 ms for 0.79-0.89 of the throughput, 10 ms
#: p99 ~107 ms for 0.89-0.94; on a noisier machine 25 ms gave p99 258 ms (over
#: the 250 ms target).  15 ms sits between.
TURN_BUDGET_S = 0.015

#: a handler returns None when done, or a future that resolves when the record is durable
Handler = Callable[[ConsumedRecord], Awaitable["asyncio.Future[Any] | None"]]


class StuckConsumer(FallbackError):
    """A partition made no commit progress for `stuck_after_s`: the worker exits."""


class ErrorOutcome(Enum):
    """What a record whose handler raised means for its offset."""

    #: handled another way (e.g. dead-lettered): the record counts as finished
    SETTLED = "settled"
    #: its outputs were not delivered: keep it un-finished, so its partition's
    #: commits stop before it and the next owner of the partition re-reads it
    LEAVE_UNFINISHED = "leave_unfinished"


#: decides what a failed record means (record, exception, stage name)
ErrorHandler = Callable[[ConsumedRecord, Exception, str], Awaitable[ErrorOutcome]]


@dataclass(frozen=True, slots=True)
class Stage:
    """What a stage is: one topic, its handler and how records are admitted."""

    name: str
    topic: str
    handle: Handler
    #: unfinished records of this stage before its partitions pause
    window: int
    #: each record in its own task (model calls that wait); else in fetch order
    concurrent: bool = False
    #: a fetched batch is handled highest first: finish requests before admitting new ones
    priority: int = 0
    #: the entry stage (router) pauses while too much work is queued in the pipeline
    entry: bool = False
    #: records waiting on this stage's partitions count as work under way
    in_pipeline: bool = False


@dataclass(eq=False, slots=True)
class StageState:
    """What a stage is doing now; only `StageConsumer` changes it."""

    stage: Stage
    #: fetched and not finished: running, waiting in the backlog or awaiting durability
    unfinished: int = 0
    #: concurrent stages: records whose task has started and not yet ended
    active: int = 0
    #: concurrent stages: fetched records waiting for a free slot of the window
    backlog: deque[tuple[InFlightRecord, ConsumedRecord]] = field(default_factory=deque)
    running: set[asyncio.Task[None]] = field(default_factory=set)
    paused: bool = False


class StageConsumer(Service):
    """One consumer (group `<app_id>-pipeline`) for every stage topic of a worker."""

    def __init__(
        self,
        *,
        stages: list[Stage],
        consumer_options: dict[str, Any],
        producer: Any,
        delivery_problem: Callable[[], str | None],
        on_error: ErrorHandler,
        before_commit: Callable[[], Awaitable[None]] | None = None,
        after_batch: Callable[[], Awaitable[None]] | None = None,
        commit_interval_s: float = 1.0,
        rebalance_timeout_s: float = 10.0,
        max_queued_records: int = 2000,
        stuck_after_s: float | None = None,
        shutdown_grace_s: float = 5.0,
        membership_group: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.stages = {stage.topic: StageState(stage) for stage in stages}
        #: topic rotation (streams/kafka/rotation.py): this group shares out the
        #: stages' plain topics, whose partitions say which partitions of every
        #: generation this worker reads (`follow`); None: one subscription
        self.membership_group = membership_group
        self.membership: AIOKafkaConsumer | None = None
        #: rotation: the (plain topic, partition) pairs this worker owns
        self.owned: set[TopicPartition] = set()
        #: the topics read: the stages' own, or their live generations (`follow`)
        self.subscription: list[str] = list(self.stages)
        self._state_of_topic: dict[str, StageState] = dict(self.stages)
        self._in_batch = False
        self.consumer_options = consumer_options
        self.producer = producer
        self.delivery_problem = delivery_problem
        self.on_error = on_error
        self.before_commit = before_commit
        self.after_batch = after_batch
        self.commit_interval_s = commit_interval_s
        # A revoked member must rejoin within the rebalance timeout: drain in half of it.
        self.revoke_drain_s = min(REVOKE_DRAIN_S, rebalance_timeout_s / 2)
        self.stop_drain_s = max(shutdown_grace_s - STOP_RESERVE_S, 0.0)
        #: set on stop: the consume loop ends at the next record boundary
        self.stopping = False
        self.tracker = OffsetTracker()
        self.consumer: AIOKafkaConsumer | None = None
        self.rebalancing = False
        #: counts revocations: a batch fetched before one is not handled further
        self.generation = 0
        self.stalled = 0
        self._loops: list[asyncio.Task[None]] = []
        #: per partition, the offset after the last record fetched
        self.fetched: dict[TopicPartition, int] = {}
        #: records queued for the later stages above which the entry stage pauses
        self.max_queued_records = max_queued_records
        self.admitting = True
        self.admission_pauses = 0
        self._commit_lock = asyncio.Lock()
        self.turns = Turns(TURN_BUDGET_S)
        self.stuck_after_s = stuck_after_s
        #: the last commit that succeeded or found nothing to commit (time.monotonic())
        self.commit_ok_at = time.monotonic()
        super().__init__(**kwargs)

    # ---------------------------------------------------------- lifecycle ----

    async def on_start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            **self.consumer_options, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        if self.membership_group is None:
            self.consumer.subscribe(
                self.subscription, listener=_Rebalance(self.on_revoked, self.on_assigned)
            )
        await self.consumer.start()
        self.commit_ok_at = time.monotonic()
        self._loops = [
            asyncio.create_task(self._consume(), name="stage-consumer"),
            asyncio.create_task(self._commit_every_interval(), name="stage-commits"),
        ]
        if self.membership_group is not None:
            # Offsets stay in the consumer's own group, committed without
            # membership: a group with members would refuse those commits.
            self.membership = AIOKafkaConsumer(
                **{**self.consumer_options, "group_id": self.membership_group},
                enable_auto_commit=False,
            )
            self.membership.subscribe(
                list(self.stages),
                listener=_Rebalance(self.on_members_revoked, self.on_members_assigned),
            )
            await self.membership.start()
            self._loops.append(asyncio.create_task(self._hold_membership(), name="stage-members"))
        if self.stuck_after_s is not None:
            self._loops.append(
                asyncio.create_task(self._exit_when_stuck(self.stuck_after_s), name="stage-stuck")
            )

    async def on_stop(self) -> None:
        """Graceful stop within `shutdown_grace_s` of being called: no new records;
        running ones get until the grace less `STOP_RESERVE_S` to finish; what
        finished is committed, what did not is re-read by the partitions' next
        owner (nothing lost, nothing finished answered twice)."""
        deadline = time.monotonic() + self.stop_drain_s
        self.stopping = True
        consume, others = self._loops[:1], self._loops[1:]
        for loop in others:
            loop.cancel()
        if consume and not self._in_batch:
            consume[0].cancel()  # waiting for a fetch: nothing half-handled
        # Else the batch ends at the next record boundary: a record cut off
        # half-way could have sent some of its outputs, and its replay duplicates.
        if consume:
            await asyncio.wait(consume, timeout=max(deadline - time.monotonic(), 0.0))
        for loop in consume:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self.consumer is None:
            return
        await self._drain(None, max(deadline - time.monotonic(), 0.0))
        try:
            await self.commit()
        except (KafkaError, PublishError) as exc:
            log.warning("final commit failed (%s): uncommitted events will be re-read", exc)
        unfinished = sum(s.unfinished for s in self.stages.values())
        if unfinished:
            log.warning(
                "stopping with %d records unfinished: the next owner re-reads them", unfinished
            )
        for state in self.stages.values():
            for task in list(state.running):
                task.cancel()
        if self.membership is not None:
            await self.membership.stop()
        await self.consumer.stop()

    def follow(self, topics: list[str]) -> None:
        """Read these topics from now on (the stages' topic generations,
        streams/kafka/rotation.py).  With the membership group this only
        changes this worker's assignment; else it is a rebalance."""
        if sorted(topics) == sorted(self.subscription):
            return
        self.subscription = list(topics)
        self._state_of_topic = {**self.stages}
        if self.membership_group is not None:
            self._reassign()  # no rebalance: only this worker's assignment changes
        elif self.consumer is not None:
            self.consumer.subscribe(
                self.subscription, listener=_Rebalance(self.on_revoked, self.on_assigned)
            )

    # ------------------------------------------------- rotation: membership ----

    async def _hold_membership(self) -> None:
        """Keeps the membership consumer polling (aiokafka leaves a group that is
        not polled); its partitions are paused: the plain topics carry no records."""
        membership = self.membership
        assert membership is not None
        try:
            while not self.stopping:
                await membership.getmany(timeout_ms=1000)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.critical("stage membership failed: %r", exc)
            await self.crash(exc)

    def _reassign(self) -> None:
        """Read the owned partitions of every followed generation, keeping the
        positions of the partitions still read (assign() would reset them to
        the last commit, and re-handle what was handled since)."""
        consumer = self.consumer
        if consumer is None:
            return
        owned = {(tp.topic, tp.partition) for tp in self.owned}
        wanted = {
            TopicPartition(topic, p)
            for topic in self.subscription
            for base, p in owned
            if self.state_of(topic).stage.topic == base
        }
        current = consumer.assignment()
        if wanted == current:
            return
        gone = current - wanted
        self.tracker.forget(gone)
        for tp in gone:
            self.fetched.pop(tp, None)
        consumer.assign(sorted(wanted))
        for tp in current & wanted:
            if tp in self.fetched:
                consumer.seek(tp, self.fetched[tp])
        for state in self.stages.values():
            if state.paused:
                self._set_paused(state, True)

    async def on_members_revoked(self, revoked: set[TopicPartition]) -> None:
        consumer = self.consumer
        assert consumer is not None
        pairs = {(tp.topic, tp.partition) for tp in revoked}
        data = {
            tp
            for tp in consumer.assignment()
            if (self.state_of(tp.topic).stage.topic, tp.partition) in pairs
        }
        await self.on_revoked(data)
        self.owned -= revoked
        self._reassign()

    def on_members_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.membership is not None:
            self.membership.pause(*assigned)
        self.owned = set(assigned)
        self._reassign()
        self.on_assigned(self.assignment())

    def state_of(self, topic: str) -> StageState:
        """The stage reading `topic`: its own topic or one of its generations."""
        state = self._state_of_topic.get(topic)
        if state is None:
            state = self.stages[split_generation(topic)[0]]
            self._state_of_topic[topic] = state
        return state

    def assignment(self) -> set[TopicPartition]:
        return set(self.consumer.assignment()) if self.consumer is not None else set()

    def in_flight(self) -> dict[str, int]:
        return {state.stage.name: state.unfinished for state in self.stages.values()}

    # ------------------------------------------------------------ consume ----

    async def _consume(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        try:
            while not self.stopping:
                batch = await consumer.getmany(timeout_ms=200, max_records=FETCH_MAX_RECORDS)
                self._in_batch = True
                try:
                    await self.handle_batch(batch)
                finally:
                    self._in_batch = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the consumer itself failed: let the worker restart
            log.critical("stage consumer failed: %r", exc)
            await self.crash(exc)

    async def handle_batch(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Hand one fetch's records to their stages, later stages first.

        Each record waits for its turn (`Turns`): the web pages (/health/), the
        producer's I/O and the model-call tasks share this event loop, and one
        fetch takes up to `FETCH_MAX_RECORDS` records."""
        generation = self.generation
        for tp, messages in sorted(batch.items(), key=self._priority):
            if self.generation != generation or self.stopping:
                return
            state = self.state_of(tp.topic)
            stage = state.stage
            # Set before the records are handled: a reassignment meanwhile
            # (topic rotation, `_reassign`) resumes the partition after them.
            self.fetched[tp] = messages[-1].offset + 1
            for message in messages:
                if not stage.concurrent:
                    await self.turns.take()  # (a concurrent record's task takes its own)
                if self.generation != generation or self.stopping:
                    # Revoked meanwhile (aiokafka's rebalances are eager: every
                    # partition goes), or stopping: the next owner reads from
                    # the last commit.
                    return
                record = ConsumedRecord(
                    tp.topic,
                    tp.partition,
                    message.offset,
                    message.key,
                    message.value or b"",
                    message.headers,
                )
                entry = self.tracker.track(tp, message.offset)
                state.unfinished += 1
                if not stage.concurrent:
                    await self._run(state, entry, record)
                elif state.active < stage.window and not state.backlog:
                    self._start(state, entry, record)
                else:
                    state.backlog.append((entry, record))
            self._pause_if_full(state)
        self._admit_if_room()
        if self.after_batch is not None and batch:
            await self.after_batch()

    def _priority(self, item: tuple[TopicPartition, Any]) -> int:
        return -self.state_of(item[0].topic).stage.priority

    def _start(self, state: StageState, entry: InFlightRecord, record: ConsumedRecord) -> None:
        state.active += 1
        task = asyncio.create_task(self._run_in_slot(state, entry, record))
        state.running.add(task)
        task.add_done_callback(state.running.discard)

    async def _run_in_slot(
        self, state: StageState, entry: InFlightRecord, record: ConsumedRecord
    ) -> None:
        try:
            await self.turns.take()
            await self._run(state, entry, record)
        finally:
            state.active -= 1
            while state.backlog and state.active < state.stage.window:
                self._start(state, *state.backlog.popleft())
            self._resume_if_room(state)

    async def _run(self, state: StageState, entry: InFlightRecord, record: ConsumedRecord) -> None:
        name = state.stage.name
        try:
            durable = await traced(name, record, state.stage.handle)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception(
                "%s: error on %s[%d]@%d", name, record.topic, record.partition, record.offset
            )
            outcome = await self.on_error(record, exc, name)
            if outcome is ErrorOutcome.SETTLED:
                self._finish(state, entry)
            else:
                self._stall(state, entry)
            return
        if durable is None:
            self._finish(state, entry)
        else:
            self.tracker.await_durability(entry)
            durable.add_done_callback(lambda done: self._on_durable(state, entry, done))

    def _on_durable(
        self, state: StageState, entry: InFlightRecord, done: asyncio.Future[Any]
    ) -> None:
        if done.cancelled() or done.exception() is not None:
            log.error(
                "%s: record at offset %d not durable: %r", state.stage.name, entry.offset, done
            )
            self._stall(state, entry)
        else:
            self._finish(state, entry)

    def _finish(self, state: StageState, entry: InFlightRecord) -> None:
        self.tracker.finish(entry)
        self._release(state)

    def _stall(self, state: StageState, entry: InFlightRecord) -> None:
        """Outputs could not be delivered or written: the record stays un-finished
        in the tracker, so its partition's commits stop there and a restart
        re-reads it; it no longer takes a slot of the stage's window."""
        self.stalled += 1
        self.tracker.give_up(entry)
        self._release(state)

    def _release(self, state: StageState) -> None:
        state.unfinished -= 1
        self._resume_if_room(state)

    def _resume_if_room(self, state: StageState) -> None:
        if state.stage.entry and not self.admitting:
            return
        if state.paused and state.unfinished < state.stage.window and not state.backlog:
            self._set_paused(state, False)

    def queued_in_pipeline(self) -> int:
        """Records the broker holds for this worker's pipeline partitions, not fetched yet."""
        consumer = self.consumer
        assert consumer is not None
        queued = 0
        for tp in consumer.assignment():
            if self.state_of(tp.topic).stage.in_pipeline and tp in self.fetched:
                queued += max((consumer.highwater(tp) or 0) - self.fetched[tp], 0)
        return queued + sum(len(s.backlog) for s in self.stages.values())

    def _admit_if_room(self) -> None:
        """Admission control: while the later stages have a queue, new requests wait
        in the requests topic, so those under way finish first (a flood of requests
        otherwise delayed every response for seconds)."""
        admitting = self.queued_in_pipeline() < self.max_queued_records
        if admitting != self.admitting:
            self.admitting = admitting
            self.admission_pauses += not admitting
            for state in self.stages.values():
                if state.stage.entry:
                    full = state.unfinished >= state.stage.window
                    self._set_paused(state, not admitting or full)

    def _pause_if_full(self, state: StageState) -> None:
        if not state.paused and (state.unfinished >= state.stage.window or state.backlog):
            self._set_paused(state, True)

    def _set_paused(self, state: StageState, paused: bool) -> None:
        state.paused = paused
        if self.consumer is None:
            return
        tps = [tp for tp in self.consumer.assignment() if self.state_of(tp.topic) is state]
        if paused:
            self.consumer.pause(*tps)
        else:
            self.consumer.resume(*tps)

    # ------------------------------------------------------------- commit ----

    async def _commit_every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval_s)
            try:
                await self.commit()
            except KafkaError as exc:  # e.g. a rebalance in progress: the next one retries
                log.warning("commit failed, retrying next interval: %s", exc)
            except PublishError as exc:
                log.critical("%s", exc)
                await self.crash(exc)  # a restart re-reads the uncommitted events
                return

    async def commit(self) -> None:
        """Commit every finished offset whose outputs are delivered.

        One commit at a time, in this order:

        1. Take the committable offsets: per partition, past the last record
           that is finished together with every record before it
           (`OffsetTracker`).  A sink record is finished once its row is
           written, so the sinks need no flush here.  Nothing moved: done.
        2. Run `before_commit` (the tenant spend of those records goes into the
           producer, so a committed charge is never lost).
        3. Flush the producer.  Every output of those records was enqueued
           before they became committable, so after the flush each output is
           delivered or failed.
        4. Check deliveries: if any enqueued record failed, refuse to commit
           (`PublishError`; the worker crashes and a restart re-reads the
           uncommitted records).
        5. Commit the offsets to the group, and remember them as committed.
        """
        consumer = self.consumer
        assert consumer is not None
        async with self._commit_lock:
            assigned = consumer.assignment()
            offsets = {tp: o for tp, o in self.tracker.to_commit().items() if tp in assigned}
            if not offsets:
                self.commit_ok_at = time.monotonic()
                return
            if self.before_commit is not None:
                await self.before_commit()
            await self.producer.flush()
            problem = self.delivery_problem()
            if problem is not None:
                raise PublishError(f"refusing to commit offsets: {problem}")
            await consumer.commit(offsets)
            self.tracker.mark_committed(offsets)
            self.commit_ok_at = time.monotonic()

    # -------------------------------------------------------------- stuck ----

    def stuck_problem(self, after_s: float) -> str | None:
        """Why the consumer is stuck, if it is: see the module docstring."""
        now = time.monotonic()
        problems = []
        for entry in self.tracker.stuck(fetched_before=now - after_s):
            tp = entry.tp
            assert isinstance(tp, TopicPartition)
            how = "stalled (outputs not delivered)" if entry.given_up else "still being handled"
            problems.append(
                f"{self.state_of(tp.topic).stage.name}: {tp.topic}[{tp.partition}]@{entry.offset} "
                f"{how} after {now - entry.tracked_at:.0f} s"
            )
        if now - self.commit_ok_at > after_s and self.tracker.to_commit():
            problems.append(f"no commit succeeded for {now - self.commit_ok_at:.0f} s")
        return "; ".join(problems) or None

    async def _exit_when_stuck(self, after_s: float) -> None:
        while True:
            await asyncio.sleep(min(after_s / 4, 5.0))
            problem = self.stuck_problem(after_s)
            if problem is not None:
                log.critical("stuck consumer, the worker exits for a restart: %s", problem)
                await self.crash(StuckConsumer(problem))
                return

    # ---------------------------------------------------------- rebalance ----

    async def _drain(self, tps: set[TopicPartition] | None, seconds: float) -> None:
        """Drop waiting records (of `tps`, or all); give running work `seconds` to finish.

        Running records and those awaiting durability (the sink) may finish
        within `seconds`; dropped and stalled ones will not finish by waiting."""
        for state in self.stages.values():
            kept: deque[tuple[InFlightRecord, ConsumedRecord]] = deque()
            for entry, record in state.backlog:
                if tps is None or entry.tp in tps:
                    self.tracker.give_up(entry)  # re-read by the next owner
                    state.unfinished -= 1
                else:
                    kept.append((entry, record))
            state.backlog = kept
            self._resume_if_room(state)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.tracker.unsettled(tps):
            await asyncio.sleep(0.05)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.rebalancing = True
        self.generation += 1
        await self._drain(revoked, self.revoke_drain_s)
        try:
            await self.commit()
        except (KafkaError, PublishError) as exc:
            log.warning("commit on revocation failed (%s): the next owner re-reads", exc)
        self.tracker.forget(revoked)
        for tp in revoked:
            self.fetched.pop(tp, None)

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.rebalancing = False
        for state in self.stages.values():
            if state.paused:
                self._set_paused(state, True)  # pause state is per partition: re-apply


class _Rebalance(ConsumerRebalanceListener):
    """Hands a group's revocations and assignments to the stage consumer."""

    def __init__(
        self,
        revoked: Callable[[set[TopicPartition]], Awaitable[None]],
        assigned: Callable[[set[TopicPartition]], None],
    ) -> None:
        self.revoked = revoked
        self.assigned = assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned(assigned)
