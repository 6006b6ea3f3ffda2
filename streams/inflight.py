"""Many events in flight per agent, acked strictly in offset order.

A model call may take seconds, so each agent keeps up to `window` events being
processed at once (a semaphore slot each, the work in its own task) instead of
one at a time.  Work finishes out of order, but acks must not: faust-streaming
issue #606 (unfixed in 0.15.3) lets the consumer commit past an un-acked
offset when acks arrive out of order (`Consumer._new_offset` treats the gap
before the first acked offset as done when the last committed offset is 0 or
exactly one below).  A crash then loses the slow event.  `OffsetOrderedAcks`
holds each finished event until every earlier event of its partition has
finished, so Faust only ever sees acks in order and never a gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP, EventT, StreamT

log = logging.getLogger(__name__)


@dataclass(eq=False)
class InFlightEvent:
    event: EventT
    offset: int
    done: bool = False


@dataclass
class OffsetOrderedAcks:
    """Per partition, a FIFO of in-flight events; finished heads are acked."""

    ack: Callable[[EventT], Awaitable[Any]]
    pending: dict[TP, deque[InFlightEvent]] = field(default_factory=dict)

    def track(self, event: EventT) -> InFlightEvent:
        message = event.message
        entry = InFlightEvent(event=event, offset=message.offset)
        self.pending.setdefault(message.tp, deque()).append(entry)
        return entry

    async def finish(self, entry: InFlightEvent) -> int:
        """Mark `entry` done and ack every finished event at the head; return how many."""
        entry.done = True
        queue = self.pending[entry.event.message.tp]
        acked = 0
        while queue and queue[0].done:
            await self.ack(queue.popleft().event)
            acked += 1
        return acked

    def oldest_unfinished_offset(self, tp: TP) -> int | None:
        queue = self.pending.get(tp)
        return queue[0].offset if queue else None

    def in_flight(self) -> int:
        return sum(len(q) for q in self.pending.values())


EventHandler = Callable[[EventT], Awaitable[None]]
ErrorHandler = Callable[[EventT, Exception], Awaitable[bool]]


async def process_in_window(
    stream: StreamT, handle: EventHandler, on_error: ErrorHandler, window: int, stage: str
) -> None:
    """Run `handle` on every event with up to `window` at once, acking in order.

    `handle` must itself deal with bad input (dead-letter it) and must only
    return once the event's outputs are in the producer (`Publisher.enqueue`):
    returning makes the offset committable, and the commit itself waits for
    those records to be delivered (`kafka_tuning.guard_commits`).
    """
    manual = stream.noack()  # type: ignore[attr-defined]  # missing from Faust's StreamT stub
    acks = OffsetOrderedAcks(ack=manual.ack)
    slots = asyncio.Semaphore(window)
    running: set[asyncio.Task[None]] = set()

    async def run(entry: InFlightEvent) -> None:
        settled = True
        try:
            await handle(entry.event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # `on_error` dead-letters a poison event (True: ack it and move on)
            # or reports that its outputs could not be delivered (False): then
            # the event stays un-acked, commits on its partition stop, and a
            # restart redelivers it.  Losing it is never an option.
            log.exception("%s: error on offset %d", stage, entry.offset)
            settled = await on_error(entry.event, exc)
        finally:
            slots.release()
        if settled:
            await acks.finish(entry)

    try:
        async for event in manual.events():
            await slots.acquire()
            entry = acks.track(event)
            task = asyncio.create_task(run(entry), name=f"{stage}@{entry.offset}")
            running.add(task)
            task.add_done_callback(running.discard)
    finally:
        for task in list(running):
            task.cancel()
