"""The one interface every model adapter implements, and the clock of one call."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.adapters.errors import NotSentBeforeDeadline


class CallClock:
    """Starts a call's limits when the request is on the wire, not before.

    The caller (`streams.stages.call.attempt_call`) runs `generate` under one
    `asyncio.Timeout` and hands the adapter this clock.  From the start the
    timer is armed for the call's limit, so an adapter with no queue of its own
    needs nothing more.  An adapter that may wait inside the worker before the
    request reaches the model (for a pooled HTTP connection, for a thread)
    calls `queued()` first and `sent()` once the request is on its way:

    - while queued, only the request's deadline bounds the wait: the timer is
      moved to `send_by`, the last instant at which sending is still worth it;
    - `sent()` starts the call's limit (`limit_s`, cut to the deadline), or raises
      `NotSentBeforeDeadline` when `send_by` has passed.

    So time queued in the worker is never taken from the model's time limit,
    and a call that never left the worker is never reported as the model's
    timeout.  `queued()` after `sent()` does nothing: a wrapper that stands for
    the model itself (fault injection) marks the call sent before its inner
    adapter runs.  Without a timer (an adapter called directly, as in tests) the
    clock only records the times.
    """

    def __init__(
        self,
        timer: asyncio.Timeout | None = None,
        *,
        limit_s: float | None = None,
        send_by: float | None = None,
        deadline_at: float | None = None,
    ) -> None:
        self._timer = timer
        self.limit_s = limit_s
        self.send_by = send_by
        self.deadline_at = deadline_at
        self.started_at = self._now()
        self.sent_at: float | None = self.started_at
        self._explicitly_sent = False
        self._arm_call_limit()

    @staticmethod
    def _now() -> float:
        """The event loop's clock (the one `asyncio.Timeout` uses), or monotonic outside one."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    def _reschedule(self, when: float | None) -> None:
        if self._timer is not None:
            self._timer.reschedule(when)

    def _arm_call_limit(self) -> None:
        assert self.sent_at is not None
        ends = [self.deadline_at]
        if self.limit_s is not None:
            ends.append(self.sent_at + self.limit_s)
        known = [end for end in ends if end is not None]
        self._reschedule(min(known) if known else None)

    def queued(self) -> None:
        """The adapter may wait in the worker before sending: only the deadline runs."""
        if self._explicitly_sent:
            return
        self.sent_at = None
        self._reschedule(self.send_by)

    def sent(self) -> None:
        """The request is going on the wire now: the call's limit starts."""
        if self._explicitly_sent:
            return
        now = self._now()
        if self.sent_at is None and self.send_by is not None and now > self.send_by:
            raise NotSentBeforeDeadline(
                f"queued {(now - self.started_at) * 1000:.0f} ms in the worker; "
                "too little of the deadline was left to send the call"
            )
        self._explicitly_sent = True
        self.sent_at = now
        self._arm_call_limit()

    @property
    def was_sent(self) -> bool:
        return self.sent_at is not None

    def queue_wait_s(self) -> float:
        """Time between the start and the send (or until now, when never sent)."""
        end = self.sent_at if self.sent_at is not None else self._now()
        return max(end - self.started_at, 0.0)

    def on_wire_s(self) -> float:
        """Time since the request was sent (0 when never sent)."""
        return 0.0 if self.sent_at is None else max(self._now() - self.sent_at, 0.0)

    def call_limit_s(self) -> float | None:
        """The limit the model had once sent: the call's limit, cut to the deadline."""
        start = self.sent_at if self.sent_at is not None else self.started_at
        limits = [self.limit_s]
        if self.deadline_at is not None:
            limits.append(self.deadline_at - start)
        known = [limit for limit in limits if limit is not None]
        return max(min(known), 0.0) if known else None


@dataclass(frozen=True)
class ModelCall:
    """What an adapter is asked: the request's input and params, the time it has
    once sent, and the clock that says when it was sent."""

    request_id: str
    input: dict[str, Any]
    params: dict[str, Any]
    timeout_s: float
    clock: CallClock = field(default_factory=CallClock, compare=False, repr=False)


@dataclass(frozen=True)
class Generation:
    """A complete answer with its metrics.  Adapters raise `ModelError` instead of
    returning a partial one."""

    output: Any
    model: str
    confidence: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ModelAdapter(Protocol):
    """`generate` returns a whole answer or raises `streams.adapters.errors.ModelError`.

    The caller enforces the call's total limit around `generate`, from the
    moment the adapter says the request was sent (`ModelCall.clock`); adapters
    that stream enforce their own first-token and stall limits inside it, from
    the same moment.
    """

    model_name: str

    async def generate(self, call: ModelCall) -> Generation: ...

    async def aclose(self) -> None: ...
