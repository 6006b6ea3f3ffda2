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
        #: when the first caller woken by the last turn resumed
        self._turn_started: float | None = None
        #: the last turn scheduled this one right behind the callers it woke
        self._follows_turn = False

    async def take(self) -> None:
        """Return now if this turn has room and nobody queues, else when woken."""
        if not self.waiting and time.perf_counter() < self.ends:
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        self._open_later()
        await waiter
        if self._turn_started is None:
            self._turn_started = time.perf_counter()

    def _open_later(self) -> None:
        if not self._opening:
            self._opening = True
            asyncio.get_running_loop().call_soon(self._open)

    def _open(self) -> None:
        """A new turn.  The callers the last turn woke have just run, one after
        the other (their wake-ups were queued right before this call): adapt
        how many to wake to how long they took."""
        self._opening = False
        now = time.perf_counter()
        started, self._turn_started = self._turn_started, None
        if self._follows_turn and started is not None:
            took = now - started
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
        self._follows_turn = bool(self.waiting)
        if self.waiting:
            self._open_later()
