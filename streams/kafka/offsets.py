"""Records in flight, committable strictly in offset order.

A model call may take seconds, so a stage keeps many records of one partition
in flight at once and they finish out of order.  The committed offset must
never pass a record that is not finished: faust-streaming issue #606
(unfixed in 0.15.3) is exactly that bug in Faust's own ack bookkeeping
(`Consumer._new_offset` treats the gap before the first acked offset as done),
and a crash then loses the slow record.  `OffsetTracker` keeps, per
partition, a FIFO of in-flight records and moves the committable offset only
past a finished head, so there is never a gap to skip.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class InFlightRecord:
    tp: Hashable
    offset: int
    queue: deque[InFlightRecord]
    #: when it was fetched (time.monotonic())
    tracked_at: float
    done: bool = False
    #: handled; finished once its output is durable (a sink row being written)
    awaiting_durability: bool = False
    #: will not finish in this worker (stalled, or dropped on revocation or
    #: stop): commits stop before it and the partition's next reader re-reads it
    given_up: bool = False


@dataclass
class OffsetTracker:
    pending: dict[Hashable, deque[InFlightRecord]] = field(default_factory=dict)
    #: per partition, the next offset to consume = what a commit may store
    committable: dict[Hashable, int] = field(default_factory=dict)
    committed: dict[Hashable, int] = field(default_factory=dict)

    def track(self, tp: Hashable, offset: int) -> InFlightRecord:
        """Call in offset order, as records are fetched."""
        queue = self.pending.get(tp)
        if queue is None:
            queue = self.pending[tp] = deque()
        entry = InFlightRecord(tp, offset, queue, time.monotonic())
        queue.append(entry)
        return entry

    def finish(self, entry: InFlightRecord) -> int:
        """Mark `entry` done; return how many records became committable."""
        entry.done = True
        queue = entry.queue
        if self.pending.get(entry.tp) is not queue:
            return 0  # its partition was revoked meanwhile: another worker owns it now
        released = 0
        last = -1
        while queue and queue[0].done:
            last = queue.popleft().offset
            released += 1
        if released:
            self.committable[entry.tp] = last + 1
        return released

    def await_durability(self, entry: InFlightRecord) -> None:
        entry.awaiting_durability = True

    def give_up(self, entry: InFlightRecord) -> None:
        """`entry` will not finish here: nobody waits for it any more."""
        entry.given_up = True

    def unsettled(self, tps: Iterable[Hashable] | None = None) -> int:
        """Records of `tps` (or of every partition) that may still finish here."""
        queues = self.pending.values() if tps is None else (self.pending.get(tp) for tp in tps)
        return sum(1 for queue in queues if queue for e in queue if not (e.done or e.given_up))

    def stuck(self, fetched_before: float) -> list[InFlightRecord]:
        """Per partition, the oldest record fetched before `fetched_before` that
        holds its commits and is not waiting for a write (the sink's own
        business): one still being handled, or one given up on (stalled)."""
        found = []
        for queue in self.pending.values():
            for entry in queue:
                if entry.done or (entry.awaiting_durability and not entry.given_up):
                    continue
                if entry.tracked_at < fetched_before:
                    found.append(entry)
                break  # later records were fetched later
        return found

    def to_commit(self) -> dict[Hashable, int]:
        """Committable offsets that moved since the last successful commit."""
        return {
            tp: offset
            for tp, offset in self.committable.items()
            if self.committed.get(tp) != offset
        }

    def mark_committed(self, offsets: dict[Hashable, int]) -> None:
        self.committed.update(offsets)

    def forget(self, tps: Iterable[Hashable]) -> None:
        """Drop revoked partitions; their late finishers no longer count."""
        for tp in tps:
            self.pending.pop(tp, None)
            self.committable.pop(tp, None)
            self.committed.pop(tp, None)
