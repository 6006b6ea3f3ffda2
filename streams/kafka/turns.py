"""Bounded turns on the event loop for the stage consumer's record handling.

Every stage, Faust's web server (/health/), the producer's I/O and the model
calls share one event loop.  asyncio runs every callback that is ready at the
start of a loop iteration before it polls the sockets again, so 500 tier
tasks made ready by one fetch ran back to back for 250-300 ms, a few such
iterations in a row, and a /health/ request (accept, read, handle, write:
an iteration each) waited for seconds under load.

`Turns.take()` is awaited before each record is handled.  While nobody
waits, a caller goes on at once for `budget_s` after a turn opened; after
that, callers queue in order.  A turn opens in each loop iteration (after the
sockets were polled) and wakes as many queued callers as ran within
`budget_s` in the last turn (doubling while they ran faster), so a queue of
any length costs nothing per iteration but the ones woken.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

#: callers woken by one turn at most, whatever the last turn measured
MAX_WAKE = 1024


class Turns:
    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        #: callers go on without queueing until then (time.perf_counter())
        self.ends = 0.0
        self.waiting: deque[asyncio.Future[None]] = deque()
        #: how many queued callers the next turn wakes
        self.wake = 16
        self._opening = False
        self._woken_at: float | None = None

    async def take(self) -> None:
        """Return now if this turn has room and nobody queues, else when woken."""
        if not self.waiting and time.perf_counter() < self.ends:
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        self._open_later()
        await waiter

    def _open_later(self) -> None:
        if not self._opening:
            self._opening = True
            asyncio.get_running_loop().call_soon(self._open)

    def _open(self) -> None:
        """A new turn.  Callers woken by the last one have run just before
        this (their wake-ups were queued first): adapt to their time."""
        self._opening = False
        now = time.perf_counter()
        if self._woken_at is not None:
            took = now - self._woken_at
            if took < self.budget_s:
                self.wake = min(self.wake * 2, MAX_WAKE)
            else:
                self.wake = max(int(self.wake * self.budget_s / took), 1)
        self.ends = now + self.budget_s
        woken = 0
        while self.waiting and woken < self.wake:
            waiter = self.waiting.popleft()
            if not waiter.done():  # a cancelled caller is skipped
                waiter.set_result(None)
                woken += 1
        self._woken_at = now if woken else None
        if self.waiting:
            self._open_later()
