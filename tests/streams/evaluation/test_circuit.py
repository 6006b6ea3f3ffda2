"""The per-tier circuit breaker, driven by a fake clock."""

from __future__ import annotations

import logging

import pytest

from streams.config import CircuitConfig
from streams.evaluation.circuit import (
    CallOutcome,
    CircuitBreaker,
    CircuitSnapshot,
    CircuitState,
    CircuitView,
    nearest_rank_p95,
)
from tests.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Breaker:
    """A `CircuitBreaker` read and driven at the fake clock's time."""

    def __init__(self, breaker: CircuitBreaker, clock: FakeClock) -> None:
        self.breaker = breaker
        self.clock = clock

    @property
    def state(self) -> CircuitState:
        return self.breaker.advance(self.clock()).state

    def view(self) -> CircuitView:
        return self.breaker.advance(self.clock())

    def allow(self) -> bool:
        return self.breaker.allow(self.clock())

    def record(self, success: bool, latency_ms: float, timed_out: bool = False) -> None:
        self.breaker.record(CallOutcome(success, latency_ms, timed_out), self.clock())

    def snapshot(self) -> CircuitSnapshot:
        return self.breaker.snapshot(self.clock())


def breaker(clock: FakeClock, latency_limit_ms: float | None = None, **config: object) -> Breaker:
    settings: dict[str, object] = {
        "window_s": 10.0,
        "min_calls": 10,
        "failure_rate": 0.5,
        "open_s": 5.0,
        "half_open_probes": 2,
    }
    settings.update(config)
    return Breaker(CircuitBreaker(CircuitConfig.model_validate(settings), latency_limit_ms), clock)


def record_many(circuit: Breaker, successes: int, failures: int, latency_ms: float = 10.0) -> None:
    for _ in range(successes):
        circuit.record(True, latency_ms)
    for _ in range(failures):
        circuit.record(False, latency_ms)


def open_circuit(circuit: Breaker) -> None:
    record_many(circuit, successes=0, failures=10)
    assert circuit.state is CircuitState.OPEN


def test_opens_on_failure_rate_once_min_calls_reached(clock: FakeClock) -> None:
    circuit = breaker(clock)
    record_many(circuit, successes=5, failures=4)
    assert circuit.state is CircuitState.CLOSED  # 9 calls < min_calls 10
    circuit.record(False, 10.0)  # 10 calls, 5 failures: 50%
    assert circuit.state is CircuitState.OPEN
    assert circuit.allow() is False
    assert circuit.snapshot().times_opened == 1


def test_does_not_open_before_min_calls(clock: FakeClock) -> None:
    circuit = breaker(clock)
    record_many(circuit, successes=0, failures=9)
    assert circuit.state is CircuitState.CLOSED
    assert circuit.allow() is True


def test_does_not_open_below_failure_rate(clock: FakeClock) -> None:
    circuit = breaker(clock)
    record_many(circuit, successes=11, failures=9)
    assert circuit.state is CircuitState.CLOSED


def test_old_outcomes_leave_the_window(clock: FakeClock) -> None:
    circuit = breaker(clock)
    record_many(circuit, successes=0, failures=9)
    clock.advance(10.0)  # those nine failures are now outside the 10 s window
    record_many(circuit, successes=5, failures=5)
    snapshot = circuit.snapshot()
    assert snapshot.calls == 10
    assert snapshot.failures == 5
    assert circuit.state is CircuitState.OPEN


def test_failures_spread_beyond_the_window_do_not_open(clock: FakeClock) -> None:
    circuit = breaker(clock)
    for _ in range(30):
        circuit.record(False, 10.0)
        clock.advance(2.0)  # at most 5 outcomes in any 10 s window
    assert circuit.state is CircuitState.CLOSED


def test_opens_on_p95_latency(clock: FakeClock) -> None:
    circuit = breaker(clock, latency_limit_ms=500.0, min_calls=20)
    record_many(circuit, successes=18, failures=0, latency_ms=100.0)
    record_many(circuit, successes=1, failures=0, latency_ms=900.0)
    # 19 calls: below min_calls even though p95 (900) is over the limit.
    assert circuit.state is CircuitState.CLOSED
    circuit.record(True, 100.0)
    # 20 calls, one slow: nearest-rank p95 is the 19th smallest = 100 ms.
    assert circuit.state is CircuitState.CLOSED
    assert circuit.snapshot().p95_latency_ms == 100.0
    circuit.record(True, 900.0)
    # 21 calls, two slow: p95 is the 20th smallest = 900 ms > 500.
    assert circuit.state is CircuitState.OPEN


def test_config_p95_limit_overrides_the_tier_latency_limit(clock: FakeClock) -> None:
    circuit = breaker(clock, latency_limit_ms=50.0, p95_latency_ms=1000.0)
    record_many(circuit, successes=20, failures=0, latency_ms=500.0)
    assert circuit.state is CircuitState.CLOSED


def test_no_latency_limit_means_latency_never_opens(clock: FakeClock) -> None:
    circuit = breaker(clock)
    record_many(circuit, successes=50, failures=0, latency_ms=60_000.0)
    assert circuit.state is CircuitState.CLOSED


def test_half_open_after_open_s_lets_a_limited_number_of_probes(clock: FakeClock) -> None:
    circuit = breaker(clock)
    open_circuit(circuit)
    clock.advance(4.9)
    assert circuit.allow() is False
    clock.advance(0.1)
    assert circuit.state is CircuitState.HALF_OPEN
    assert circuit.allow() is True
    assert circuit.allow() is True
    assert circuit.allow() is False  # half_open_probes = 2 outstanding
    assert circuit.snapshot().probes_in_flight == 2


def test_closes_after_all_probes_succeed_with_a_clear_window(clock: FakeClock) -> None:
    circuit = breaker(clock)
    open_circuit(circuit)
    clock.advance(5.0)
    assert circuit.allow() and circuit.allow()
    circuit.record(True, 10.0)
    assert circuit.state is CircuitState.HALF_OPEN
    circuit.record(True, 10.0)
    assert circuit.state is CircuitState.CLOSED
    snapshot = circuit.snapshot()
    assert (snapshot.calls, snapshot.failures, snapshot.open_age_s) == (0, 0, None)
    # A fresh window: nine failures are not enough to reopen.
    record_many(circuit, successes=0, failures=9)
    assert circuit.state is CircuitState.CLOSED


def test_probe_failure_reopens_for_a_fresh_open_s(clock: FakeClock) -> None:
    circuit = breaker(clock)
    open_circuit(circuit)
    clock.advance(5.0)
    assert circuit.allow() and circuit.allow()
    circuit.record(True, 10.0)
    circuit.record(False, 10.0)
    assert circuit.state is CircuitState.OPEN
    assert circuit.snapshot().times_opened == 2
    clock.advance(4.0)
    assert circuit.allow() is False
    clock.advance(1.0)
    assert circuit.allow() is True


def test_lost_probes_do_not_wedge_the_circuit(clock: FakeClock) -> None:
    circuit = breaker(clock)
    open_circuit(circuit)
    clock.advance(5.0)
    assert circuit.allow() and circuit.allow()  # both outcomes will never arrive
    clock.advance(3.0)
    assert circuit.allow() is False
    clock.advance(2.1)  # outstanding for longer than open_s
    assert circuit.allow() is True
    assert circuit.allow() is True
    circuit.record(True, 10.0)
    circuit.record(True, 10.0)
    assert circuit.state is CircuitState.CLOSED


def test_stragglers_while_open_do_not_close_it(clock: FakeClock) -> None:
    circuit = breaker(clock)
    open_circuit(circuit)
    record_many(circuit, successes=50, failures=0)
    assert circuit.state is CircuitState.OPEN
    clock.advance(5.0)
    assert circuit.state is CircuitState.HALF_OPEN
    # Successes with no probe outstanding are stragglers too.
    record_many(circuit, successes=5, failures=0)
    assert circuit.state is CircuitState.HALF_OPEN


def test_disabled_always_allows(clock: FakeClock) -> None:
    circuit = breaker(clock, enabled=False)
    record_many(circuit, successes=0, failures=100)
    assert circuit.allow() is True
    assert circuit.state is CircuitState.CLOSED
    assert circuit.snapshot().calls == 0


def test_snapshot_as_dict(clock: FakeClock) -> None:
    circuit = breaker(clock, latency_limit_ms=500.0)
    record_many(circuit, successes=3, failures=1, latency_ms=20.0)
    assert circuit.snapshot().as_dict() == {
        "state": "closed",
        "calls": 4,
        "failures": 1,
        "failure_rate": 0.25,
        "p95_latency_ms": 20.0,
        "open_age_s": None,
        "probes_in_flight": 0,
        "times_opened": 0,
    }
    open_circuit(circuit)
    clock.advance(2.0)
    assert circuit.snapshot().as_dict()["open_age_s"] == 2.0


def test_nearest_rank_p95() -> None:
    assert nearest_rank_p95([]) is None
    assert nearest_rank_p95([float(n) for n in range(1, 101)]) == 95.0
    assert nearest_rank_p95([5.0]) == 5.0


def test_reading_the_state_or_a_snapshot_changes_nothing(clock: FakeClock) -> None:
    circuit = breaker(clock)
    open_circuit(circuit)
    clock.advance(6.0)  # past open_s: due to become half-open, but nobody advanced it
    raw = circuit.breaker
    assert raw.snapshot(clock()).state is CircuitState.HALF_OPEN  # what advance would give
    assert raw.state is CircuitState.OPEN
    assert raw.snapshot(clock()).state is CircuitState.HALF_OPEN
    assert raw.advance(clock()).state is CircuitState.HALF_OPEN  # the explicit transition
    assert raw.state is CircuitState.HALF_OPEN


def test_views_predict_what_recording_does(clock: FakeClock) -> None:
    """The decision predicts with `CircuitView.after_call`; the breaker must agree."""
    circuit = breaker(clock)
    for success in [True, False, False, True, False, False, False, False, False, False, False]:
        call = CallOutcome(success, 10.0)
        predicted = circuit.view().after_call(call)
        circuit.breaker.record(call, clock())
        assert circuit.view() == predicted
    assert circuit.state is CircuitState.OPEN
    clock.advance(5.0)
    assert circuit.allow()
    predicted = circuit.view().after_call(CallOutcome(True, 10.0))
    circuit.record(True, 10.0)
    assert circuit.view() == predicted


# ------------------------------------------------------------ slow calls ----


def test_slow_timeouts_open_before_min_calls_is_ever_reached(clock: FakeClock) -> None:
    """A silent upstream: ~5 s per call left 16 calls in a 30 s window, below
    min_calls 20, and the failure rate alone never opened the circuit."""
    circuit = breaker(clock, window_s=30.0, min_calls=20, open_s=60.0)
    for number in range(1, 17):
        circuit.record(False, 5000.0, timed_out=True)
        clock.advance(1.8)  # 16 calls in 30 s
        expected = CircuitState.OPEN if number >= 5 else CircuitState.CLOSED
        assert circuit.breaker.state is expected, number
    assert circuit.snapshot().times_opened == 1
    assert "5 slow calls of 5 calls in 30 s" in circuit.view().why


def test_calls_over_slow_call_ms_are_slow_even_when_they_succeed(clock: FakeClock) -> None:
    circuit = breaker(clock, min_calls=20, slow_call_ms=2000.0)
    record_many(circuit, successes=4, failures=0, latency_ms=2000.0)
    record_many(circuit, successes=1, failures=0, latency_ms=1999.0)
    assert circuit.state is CircuitState.CLOSED  # 4 slow calls < min_slow_calls 5
    circuit.record(True, 2500.0)
    assert circuit.state is CircuitState.OPEN  # 5 of 6 slow: 83% >= 80%


def test_slow_calls_below_the_slow_call_rate_do_not_open(clock: FakeClock) -> None:
    circuit = breaker(clock, min_calls=20)
    for _ in range(9):  # 18 calls: below min_calls 20
        circuit.record(False, 5000.0, timed_out=True)
        record_many(circuit, successes=1, failures=0)  # half the calls are quick
    assert circuit.state is CircuitState.CLOSED


def test_without_slow_call_ms_only_timeouts_are_slow(clock: FakeClock) -> None:
    circuit = breaker(clock, min_calls=20)
    record_many(circuit, successes=10, failures=0, latency_ms=60_000.0)
    assert circuit.state is CircuitState.CLOSED


def test_slow_calls_never_need_more_than_min_calls(clock: FakeClock) -> None:
    circuit = breaker(clock, min_calls=3, failure_rate=1.0, slow_call_ms=100.0)
    record_many(circuit, successes=3, failures=0, latency_ms=150.0)
    assert circuit.state is CircuitState.OPEN


def test_every_transition_is_logged_with_its_reason(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    circuit = breaker(clock, half_open_probes=1)
    circuit.breaker.name = "primary"
    with caplog.at_level(logging.WARNING, logger="streams.evaluation.circuit"):
        open_circuit(circuit)
        clock.advance(5.0)
        assert circuit.allow()
        circuit.record(False, 10.0, timed_out=True)
        clock.advance(5.0)
        assert circuit.allow()
        circuit.record(True, 10.0)
    assert [r.getMessage() for r in caplog.records] == [
        "circuit primary: closed -> open (10 failures of 10 calls in 10 s >= 50%)",
        "circuit primary: open -> half_open (open_s 5 s elapsed: probing)",
        "circuit primary: half_open -> open (a probe timed out)",
        "circuit primary: open -> half_open (open_s 5 s elapsed: probing)",
        "circuit primary: half_open -> closed (1 probe succeeded)",
    ]
    assert {r.levelno for r in caplog.records} == {logging.WARNING}
