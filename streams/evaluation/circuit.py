"""Per-tier circuit breaker: health evaluation over a sliding window of outcomes.

    closed ──(window: calls >= min_calls and failure rate >= failure_rate,
    │          or p95 latency > limit)──> open
    open ──(open_s elapsed, checked on allow())──> half_open
    half_open ──(half_open_probes probes all succeed)──> closed (window cleared)
    half_open ──(any probe fails)──> open (a fresh open_s)

Pure logic: no I/O, time comes from the injected `clock` (seconds, monotonic).
Every worker keeps its own breakers; they are not shared across workers, which
is what Hystrix and Resilience4j do too (a breaker reacts to what *this* process
sees). Not thread-safe: it is meant to be used from one asyncio loop.

The p95 check is O(1) per call: rather than sorting the window, the breaker
counts calls slower than the limit; with nearest-rank p95 (the k-th smallest of
n latencies, k = ceil(0.95 n)), p95 > limit exactly when more than n - k calls
are slower than the limit. `snapshot()` sorts, but only when asked.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from streams.config import CircuitConfig

__all__ = ["CircuitBreaker", "CircuitSnapshot", "CircuitState"]


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class CircuitSnapshot:
    """The breaker's state for reports and metrics."""

    state: CircuitState
    calls: int
    failures: int
    failure_rate: float
    p95_latency_ms: float | None
    open_age_s: float | None  # seconds since the circuit last opened; None when closed
    probes_in_flight: int
    times_opened: int

    def as_dict(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["state"] = str(self.state)
        return fields


@dataclass(frozen=True)
class _Outcome:
    at_s: float
    success: bool
    latency_ms: float
    slow: bool


def nearest_rank_p95(latencies_ms: list[float]) -> float | None:
    if not latencies_ms:
        return None
    ordered = sorted(latencies_ms)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


class CircuitBreaker:
    """One tier's breaker. Call `allow()` before routing to the tier and
    `record()` once the attempt's outcome (success = no error and no timeout) is known."""

    def __init__(
        self,
        config: CircuitConfig,
        latency_limit_ms: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        # The breaker's own p95 limit wins; else the tier's acceptance latency limit.
        self._latency_limit_ms = (
            config.p95_latency_ms if config.p95_latency_ms is not None else latency_limit_ms
        )
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._window: deque[_Outcome] = deque()
        self._failures = 0
        self._slow = 0
        self._opened_at_s: float | None = None
        self._times_opened = 0
        # Start instants of half-open probes whose outcome has not arrived yet.
        self._probes_started_s: deque[float] = deque()
        self._probe_successes = 0

    @property
    def state(self) -> CircuitState:
        if not self._config.enabled:
            return CircuitState.CLOSED
        self._advance(self._clock())
        return self._state

    def allow(self) -> bool:
        """May a request be sent to the tier now? In half-open, True reserves a probe."""
        if not self._config.enabled:
            return True
        now = self._clock()
        self._advance(now)
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN:
            return False
        # Half-open. A probe whose outcome never arrives (the worker lost the
        # event, the caller forgot) must not keep the circuit shut for ever:
        # after open_s it no longer holds its slot.
        while self._probes_started_s and now - self._probes_started_s[0] > self._config.open_s:
            self._probes_started_s.popleft()
        probes_needed = self._config.half_open_probes - self._probe_successes
        if len(self._probes_started_s) < probes_needed:
            self._probes_started_s.append(now)
            return True
        return False

    def record(self, success: bool, latency_ms: float) -> None:
        """The outcome of one call to the tier."""
        if not self._config.enabled:
            return
        now = self._clock()
        self._advance(now)
        if self._state is CircuitState.OPEN:
            # A straggler from before the circuit opened: it says nothing about
            # whether the tier has recovered, so it can neither close nor extend it.
            return
        if self._state is CircuitState.HALF_OPEN:
            self._record_probe(success, now)
            return
        self._append(_Outcome(now, success, latency_ms, self._is_slow(latency_ms)))
        self._evict(now)
        if self._window_is_unhealthy():
            self._open(now)

    def snapshot(self) -> CircuitSnapshot:
        now = self._clock()
        if self._config.enabled:
            self._advance(now)
            self._evict(now)
        calls = len(self._window)
        return CircuitSnapshot(
            state=self.state,
            calls=calls,
            failures=self._failures,
            failure_rate=self._failures / calls if calls else 0.0,
            p95_latency_ms=nearest_rank_p95([outcome.latency_ms for outcome in self._window]),
            open_age_s=None if self._opened_at_s is None else now - self._opened_at_s,
            probes_in_flight=len(self._probes_started_s),
            times_opened=self._times_opened,
        )

    # ------------------------------------------------------------ internals --

    def _advance(self, now: float) -> None:
        """Open becomes half-open once open_s has passed (lazily: no timers)."""
        if (
            self._state is CircuitState.OPEN
            and self._opened_at_s is not None
            and now - self._opened_at_s >= self._config.open_s
        ):
            self._state = CircuitState.HALF_OPEN
            self._probes_started_s.clear()
            self._probe_successes = 0

    def _record_probe(self, success: bool, now: float) -> None:
        if not self._probes_started_s:
            # No probe outstanding: an outcome from a call made before the
            # circuit opened (or a probe already given up as lost). Ignore it.
            return
        self._probes_started_s.popleft()
        if not success:
            self._open(now)
            return
        self._probe_successes += 1
        if self._probe_successes >= self._config.half_open_probes:
            self._close()

    def _open(self, now: float) -> None:
        self._state = CircuitState.OPEN
        self._opened_at_s = now
        self._times_opened += 1
        self._probes_started_s.clear()
        self._probe_successes = 0

    def _close(self) -> None:
        # A fresh start: the failures that opened the circuit are history.
        self._state = CircuitState.CLOSED
        self._opened_at_s = None
        self._window.clear()
        self._failures = 0
        self._slow = 0
        self._probes_started_s.clear()
        self._probe_successes = 0

    def _is_slow(self, latency_ms: float) -> bool:
        return self._latency_limit_ms is not None and latency_ms > self._latency_limit_ms

    def _append(self, outcome: _Outcome) -> None:
        self._window.append(outcome)
        self._failures += not outcome.success
        self._slow += outcome.slow

    def _evict(self, now: float) -> None:
        horizon = now - self._config.window_s
        while self._window and self._window[0].at_s <= horizon:
            outcome = self._window.popleft()
            self._failures -= not outcome.success
            self._slow -= outcome.slow

    def _window_is_unhealthy(self) -> bool:
        calls = len(self._window)
        if calls < self._config.min_calls:
            return False
        if self._failures / calls >= self._config.failure_rate:
            return True
        # p95 > limit  <=>  fewer than ceil(0.95 n) calls are within the limit.
        return self._slow > calls - math.ceil(0.95 * calls)
