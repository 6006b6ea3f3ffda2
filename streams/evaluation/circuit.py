"""Per-tier circuit breaker: health evaluation over a sliding window of calls.

    closed ──(window unhealthy: see below)──> open
    open ──(open_s elapsed, applied by advance())──> half_open
    half_open ──(half_open_probes probes all succeed)──> closed (window cleared)
    half_open ──(any probe fails)──> open (a fresh open_s)

The window is unhealthy when either:

- it holds at least `min_calls` calls and their failure rate is at least
  `failure_rate`, or their p95 latency is over the limit; or
- at least `min_slow_calls` of its calls were slow (a timeout, or a call of
  `slow_call_ms` or more) and they are at least `slow_call_rate` of its calls.
  Slow calls need a minimum of their own: a silent upstream holds each call for
  seconds, so a window may never see `min_calls` of them (at 5 s a call, a 30 s
  window held 16).  Resilience4j's slowCallRateThreshold, with a minimum that
  fits slow calls.

Two parts, so that the decision can stay pure:

- `CircuitView`, a frozen value: one breaker's state and window counters at one
  instant.  Its methods are the transition rules: `allows`, `with_probe_reserved`,
  `after_call`.  The decision reads views and predicts with them; it never
  touches a breaker.
- `CircuitBreaker`, what one worker keeps per tier: the window's calls with their
  instants and the probes' start instants.  Its state changes only through
  explicit calls, each given `now_s` (monotonic seconds): `advance` applies the
  time-based transitions (the window slides, lost probes expire, open becomes
  half-open) and returns the view; `apply` carries out a `BreakerEvent` the
  decision returned.  Reading `state` or `snapshot` changes nothing.  Every
  transition is logged at WARNING with its reason.

Every worker keeps its own breakers; they are not shared across workers, which
is what Hystrix and Resilience4j do too (a breaker reacts to what *this* process
sees). Not thread-safe: it is meant to be used from one asyncio loop.

The p95 check is O(1) per call: rather than sorting the window, the breaker
counts calls slower than the limit; with nearest-rank p95 (the k-th smallest of
n latencies, k = ceil(0.95 n)), p95 > limit exactly when more than n - k calls
are slower than the limit. `snapshot()` sorts, but only when asked.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from streams.config import CircuitConfig, TierConfig

__all__ = [
    "BreakerEvent",
    "CallOutcome",
    "CircuitBreaker",
    "CircuitSnapshot",
    "CircuitState",
    "CircuitView",
    "RecordCall",
    "ReleaseProbe",
    "ReserveProbe",
    "circuit_views",
    "nearest_rank_p95",
]

log = logging.getLogger(__name__)


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# ------------------------------------------------------------- events ----


@dataclass(frozen=True)
class CallOutcome:
    """One call to the tier as health sees it: success = no system failure."""

    success: bool
    latency_ms: float
    timed_out: bool = False


@dataclass(frozen=True)
class RecordCall:
    """Count this call in the tier's window (or, half-open, as a probe's outcome)."""

    tier: str
    call: CallOutcome


@dataclass(frozen=True)
class ReserveProbe:
    """A half-open tier was given a request: that call holds one probe slot."""

    tier: str


@dataclass(frozen=True)
class ReleaseProbe:
    """A call that says nothing about the tier's health (the request itself was
    refused) gives its probe slot back rather than hold it until it expires."""

    tier: str


BreakerEvent = RecordCall | ReserveProbe | ReleaseProbe


# --------------------------------------------------------------- view ----


@dataclass(frozen=True)
class CircuitView:
    """One breaker at one instant, as a value; the transition rules are its methods."""

    config: CircuitConfig
    p95_limit_ms: float | None = None
    state: CircuitState = CircuitState.CLOSED
    calls: int = 0
    failures: int = 0
    over_p95: int = 0  # calls slower than p95_limit_ms
    slow: int = 0  # timeouts and calls of slow_call_ms or more
    probes_in_flight: int = 0
    probe_successes: int = 0
    times_opened: int = 0
    why: str = "no calls yet"  # the reason for the last transition

    @property
    def allows(self) -> bool:
        """May a call to the tier start now?  Half-open: while a probe slot is free."""
        if not self.config.enabled or self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            return False
        return self.probes_in_flight < self.config.half_open_probes - self.probe_successes

    @property
    def takes_probe(self) -> bool:
        """A call let through now holds a probe slot (`ReserveProbe`)."""
        return self.config.enabled and self.state is CircuitState.HALF_OPEN

    def with_probe_reserved(self) -> CircuitView:
        if not self.takes_probe:
            return self
        return dataclasses.replace(self, probes_in_flight=self.probes_in_flight + 1)

    def with_probe_released(self) -> CircuitView:
        if not self.takes_probe or self.probes_in_flight == 0:
            return self
        return dataclasses.replace(self, probes_in_flight=self.probes_in_flight - 1)

    def is_slow(self, call: CallOutcome) -> bool:
        limit = self.config.slow_call_ms
        return call.timed_out or (limit is not None and call.latency_ms >= limit)

    def is_over_p95_limit(self, call: CallOutcome) -> bool:
        return self.p95_limit_ms is not None and call.latency_ms > self.p95_limit_ms

    def after_call(self, call: CallOutcome) -> CircuitView:
        """The view once `call` is recorded."""
        if not self.config.enabled or self.state is CircuitState.OPEN:
            # Open: a straggler from before the circuit opened says nothing about
            # whether the tier has recovered, so it can neither close nor extend it.
            return self
        if self.state is CircuitState.HALF_OPEN:
            return self._after_probe(call)
        counted = dataclasses.replace(
            self,
            calls=self.calls + 1,
            failures=self.failures + (not call.success),
            over_p95=self.over_p95 + self.is_over_p95_limit(call),
            slow=self.slow + self.is_slow(call),
        )
        reason = counted.unhealthy_reason()
        return counted if reason is None else counted._opened(reason)

    def without(self, success: bool, over_p95: bool, slow: bool) -> CircuitView:
        """The view once a call leaves the window."""
        return dataclasses.replace(
            self,
            calls=self.calls - 1,
            failures=self.failures - (not success),
            over_p95=self.over_p95 - over_p95,
            slow=self.slow - slow,
        )

    def half_opened(self) -> CircuitView:
        return dataclasses.replace(
            self,
            state=CircuitState.HALF_OPEN,
            probes_in_flight=0,
            probe_successes=0,
            why=f"open_s {self.config.open_s:g} s elapsed: probing",
        )

    def unhealthy_reason(self) -> str | None:
        """Why the window's calls say the tier is unhealthy, or None."""
        config, calls = self.config, self.calls
        in_window = f"of {calls} calls in {config.window_s:g} s"
        if calls >= config.min_calls:
            if self.failures / calls >= config.failure_rate:
                return f"{self.failures} failures {in_window} >= {config.failure_rate:.0%}"
            # p95 > limit  <=>  fewer than ceil(0.95 n) calls are within the limit.
            if self.over_p95 > calls - math.ceil(0.95 * calls):
                return f"p95 latency {in_window} > {self.p95_limit_ms:g} ms"
        min_slow = min(config.min_slow_calls, config.min_calls)
        if calls and self.slow >= min_slow and self.slow / calls >= config.slow_call_rate:
            return f"{self.slow} slow calls {in_window} >= {config.slow_call_rate:.0%}"
        return None

    def _after_probe(self, call: CallOutcome) -> CircuitView:
        if self.probes_in_flight == 0:
            # No probe outstanding: an outcome from a call made before the
            # circuit opened (or a probe already given up as lost). Ignore it.
            return self
        if not call.success:
            return self._opened("a probe timed out" if call.timed_out else "a probe failed")
        successes = self.probe_successes + 1
        if successes >= self.config.half_open_probes:
            # A fresh start: the failures that opened the circuit are history.
            return CircuitView(
                config=self.config,
                p95_limit_ms=self.p95_limit_ms,
                times_opened=self.times_opened,
                why="1 probe succeeded" if successes == 1 else f"{successes} probes succeeded",
            )
        return dataclasses.replace(
            self, probes_in_flight=self.probes_in_flight - 1, probe_successes=successes
        )

    def _opened(self, why: str) -> CircuitView:
        return dataclasses.replace(
            self,
            state=CircuitState.OPEN,
            probes_in_flight=0,
            probe_successes=0,
            times_opened=self.times_opened + 1,
            why=why,
        )


# ------------------------------------------------------------ snapshot ----


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


def nearest_rank_p95(latencies_ms: list[float]) -> float | None:
    if not latencies_ms:
        return None
    ordered = sorted(latencies_ms)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


# ------------------------------------------------------------- breaker ----


@dataclass(frozen=True)
class _Windowed:
    at_s: float
    success: bool
    latency_ms: float
    over_p95: bool
    slow: bool


class CircuitBreaker:
    """One tier's breaker: its view, plus the instants the view's counts came from."""

    def __init__(
        self, config: CircuitConfig, latency_limit_ms: float | None = None, name: str = "tier"
    ) -> None:
        self.name = name
        # The breaker's own p95 limit wins; else the tier's acceptance latency limit.
        p95_limit_ms = (
            config.p95_latency_ms if config.p95_latency_ms is not None else latency_limit_ms
        )
        self._view = CircuitView(config=config, p95_limit_ms=p95_limit_ms)
        self._window: deque[_Windowed] = deque()
        # Start instants of half-open probes whose outcome has not arrived yet.
        self._probes_started_s: deque[float] = deque()
        self._opened_at_s: float | None = None
        #: told (tier, before, after) on every state change: the transition counter
        self.on_transition: Callable[[str, CircuitState, CircuitState], None] | None = None

    @classmethod
    def for_tier(cls, tier: TierConfig) -> CircuitBreaker:
        return cls(tier.circuit, tier.accept.max_latency_ms, name=tier.name)

    @property
    def config(self) -> CircuitConfig:
        return self._view.config

    @property
    def state(self) -> CircuitState:
        """The state as last advanced: reading it changes nothing."""
        return self._view.state

    def advance(self, now_s: float) -> CircuitView:
        """Apply the time-based transitions up to `now_s` and return the view."""
        view, evicted, expired = self._advanced(now_s)
        for _ in range(evicted):
            self._window.popleft()
        for _ in range(expired):
            self._probes_started_s.popleft()
        self._become(view, now_s)
        return view

    def apply(self, event: BreakerEvent, now_s: float) -> None:
        """Carry out what a decision returned."""
        match event:
            case RecordCall(call=call):
                self.record(call, now_s)
            case ReserveProbe():
                self.allow(now_s)
            case ReleaseProbe():
                self.release_probe(now_s)

    def allow(self, now_s: float) -> bool:
        """May a call start now?  Half-open, True takes one probe slot."""
        view = self.advance(now_s)
        if not view.allows:
            return False
        if view.takes_probe:
            self._probes_started_s.append(now_s)
            self._become(view.with_probe_reserved(), now_s)
        return True

    def release_probe(self, now_s: float) -> None:
        view = self.advance(now_s)
        if view.takes_probe and self._probes_started_s:
            self._probes_started_s.popleft()
            self._become(view.with_probe_released(), now_s)

    def record(self, call: CallOutcome, now_s: float) -> None:
        """The outcome of one call to the tier."""
        before = self.advance(now_s)
        after = before.after_call(call)
        if before.state is CircuitState.CLOSED and before.config.enabled:
            self._window.append(
                _Windowed(
                    now_s,
                    call.success,
                    call.latency_ms,
                    before.is_over_p95_limit(call),
                    before.is_slow(call),
                )
            )
        elif before.takes_probe and before.probes_in_flight > 0:
            self._probes_started_s.popleft()  # the oldest probe: probes are not told apart
        self._become(after, now_s)

    def snapshot(self, now_s: float) -> CircuitSnapshot:
        """The view at `now_s`, as `advance` would leave it, without changing anything."""
        view, evicted, _ = self._advanced(now_s)
        window = list(self._window)[evicted:]
        return CircuitSnapshot(
            state=view.state,
            calls=view.calls,
            failures=view.failures,
            failure_rate=view.failures / view.calls if view.calls else 0.0,
            p95_latency_ms=nearest_rank_p95([call.latency_ms for call in window]),
            open_age_s=None if self._opened_at_s is None else now_s - self._opened_at_s,
            probes_in_flight=view.probes_in_flight,
            times_opened=view.times_opened,
        )

    # ------------------------------------------------------------ internals --

    def _advanced(self, now_s: float) -> tuple[CircuitView, int, int]:
        """(the view at now_s, calls that left the window, lost probes), computed only."""
        view = self._view
        if not view.config.enabled:
            return view, 0, 0
        horizon = now_s - view.config.window_s
        evicted = 0
        for call in self._window:
            if call.at_s > horizon:
                break
            view = view.without(call.success, call.over_p95, call.slow)
            evicted += 1
        expired = 0
        if view.state is CircuitState.HALF_OPEN:
            # A probe whose outcome never arrives (the worker lost the event)
            # must not keep the circuit shut for ever: after open_s it no longer
            # holds its slot.
            for started_s in self._probes_started_s:
                if now_s - started_s <= view.config.open_s:
                    break
                expired += 1
            view = dataclasses.replace(view, probes_in_flight=view.probes_in_flight - expired)
        elif (
            view.state is CircuitState.OPEN
            and self._opened_at_s is not None
            and now_s - self._opened_at_s >= view.config.open_s
        ):
            view = view.half_opened()
        return view, evicted, expired

    def _become(self, view: CircuitView, now_s: float) -> None:
        before = self._view
        self._view = view
        if view.state is before.state:
            return
        if view.state is CircuitState.OPEN:
            self._opened_at_s = now_s
            self._probes_started_s.clear()
        elif view.state is CircuitState.CLOSED:
            self._opened_at_s = None
            self._window.clear()
            self._probes_started_s.clear()
        log.warning("circuit %s: %s -> %s (%s)", self.name, before.state, view.state, view.why)
        if self.on_transition is not None:
            self.on_transition(self.name, before.state, view.state)


def circuit_views(circuits: Mapping[str, CircuitBreaker], now_s: float) -> dict[str, CircuitView]:
    """Every breaker advanced to `now_s`: what a decision may consult."""
    return {name: breaker.advance(now_s) for name, breaker in circuits.items()}


def apply_breaker_events(
    circuits: Mapping[str, CircuitBreaker], events: Iterable[BreakerEvent], now_s: float
) -> None:
    for event in events:
        breaker = circuits.get(event.tier)
        if breaker is not None:
            breaker.apply(event, now_s)
