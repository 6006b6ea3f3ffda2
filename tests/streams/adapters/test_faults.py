from __future__ import annotations

import random
import time

import pytest

from streams.adapters.base import Generation, ModelCall
from streams.adapters.errors import ModelUnavailable
from streams.adapters.faults import FaultInjectingAdapter, current_outage, in_outage
from streams.config import FaultsConfig, OutageConfig
from tests.clock import FakeClock

CALL = ModelCall(request_id="r1", input={}, params={}, timeout_s=1.0)


class CountingAdapter:
    """An instant model that counts its calls."""

    model_name = "inner-model"

    def __init__(self) -> None:
        self.calls = 0
        self.closed = False

    async def generate(self, call: ModelCall) -> Generation:
        self.calls += 1
        return Generation(output="ok", model=self.model_name, extra={"from": "inner"})

    async def aclose(self) -> None:
        self.closed = True


class RecordedSleeps:
    def __init__(self) -> None:
        self.delays_s: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays_s.append(delay_s)


def wrapped(
    faults: FaultsConfig, clock: FakeClock | None = None
) -> tuple[FaultInjectingAdapter, CountingAdapter, RecordedSleeps]:
    inner = CountingAdapter()
    sleeps = RecordedSleeps()
    adapter = FaultInjectingAdapter(inner, faults, clock=clock or FakeClock(), sleep=sleeps)
    return adapter, inner, sleeps


async def outcomes(adapter: FaultInjectingAdapter, count: int) -> list[str]:
    results = []
    for _ in range(count):
        try:
            await adapter.generate(CALL)
            results.append("ok")
        except ModelUnavailable:
            results.append("error")
    return results


# ---------------------------------------------------------------- outages ----


@pytest.mark.parametrize(
    ("elapsed_s", "down"),
    [(0.0, False), (9.99, False), (10.0, True), (14.99, True), (15.0, False), (100.0, False)],
)
def test_single_outage_window(elapsed_s: float, down: bool) -> None:
    outages = [OutageConfig(start_s=10, duration_s=5)]
    assert in_outage(outages, elapsed_s) is down


@pytest.mark.parametrize(
    ("elapsed_s", "down"),
    [
        (5.0, False),  # before the first window
        (10.0, True),
        (12.0, True),
        (13.0, False),
        (69.9, False),
        (70.0, True),  # the window repeats every 60 s
        (72.9, True),
        (130.5, True),
        (133.0, False),
    ],
)
def test_repeating_outage_window(elapsed_s: float, down: bool) -> None:
    outages = [OutageConfig(start_s=10, duration_s=3, every_s=60)]
    assert in_outage(outages, elapsed_s) is down


def test_any_of_several_windows() -> None:
    first = OutageConfig(start_s=0, duration_s=1)
    second = OutageConfig(start_s=20, duration_s=2, every_s=10)
    assert current_outage([first, second], 0.5) is first
    assert current_outage([first, second], 31.0) is second
    assert current_outage([first, second], 5.0) is None
    assert not in_outage([], 5.0)


async def test_outage_fails_at_once_while_the_clock_is_inside_a_window() -> None:
    clock = FakeClock()
    faults = FaultsConfig(added_latency_ms=50, outages=[OutageConfig(start_s=10, duration_s=5)])
    adapter, inner, sleeps = wrapped(faults, clock)
    assert (await adapter.generate(CALL)).output == "ok"
    clock.advance(11)
    with pytest.raises(ModelUnavailable, match=r"injected outage \(5s from 10s\) at 11.0s"):
        await adapter.generate(CALL)
    assert inner.calls == 1
    assert sleeps.delays_s == [0.05]  # no latency added before an outage error
    clock.advance(5)
    assert (await adapter.generate(CALL)).output == "ok"


# ------------------------------------------------------------------ rates ----


async def test_error_rate_with_a_seed_is_reproducible() -> None:
    faults = FaultsConfig(error_rate=0.3, seed=42)
    first, inner, _ = wrapped(faults)
    second, _, _ = wrapped(faults)
    first_results = await outcomes(first, 1000)
    assert first_results == await outcomes(second, 1000)
    errors = first_results.count("error")
    assert 240 <= errors <= 360
    assert inner.calls == 1000 - errors


async def test_error_message_and_retryable() -> None:
    adapter, _, _ = wrapped(FaultsConfig(error_rate=1.0))
    with pytest.raises(ModelUnavailable, match="injected fault: error_rate 1") as caught:
        await adapter.generate(CALL)
    assert caught.value.retryable


async def test_no_faults_configured_passes_through() -> None:
    adapter, inner, sleeps = wrapped(FaultsConfig())
    generation = await adapter.generate(CALL)
    assert generation.output == "ok"
    assert generation.extra == {"from": "inner"}
    assert adapter.model_name == "inner-model"
    assert sleeps.delays_s == []
    assert inner.calls == 1


# ---------------------------------------------------------------- latency ----


async def test_added_latency_and_spikes() -> None:
    faults = FaultsConfig(added_latency_ms=20, spike_rate=0.25, spike_latency_ms=500, seed=7)
    adapter, _, sleeps = wrapped(faults)
    await outcomes(adapter, 400)
    assert len(sleeps.delays_s) == 400
    assert set(sleeps.delays_s) == {0.02, 0.52}
    spikes = sleeps.delays_s.count(0.52)
    assert 70 <= spikes <= 130


async def test_injected_latency_is_noted_in_the_generation() -> None:
    adapter, _, _ = wrapped(FaultsConfig(added_latency_ms=20))
    generation = await adapter.generate(CALL)
    assert generation.extra == {"from": "inner", "injected_latency_ms": 20.0}


async def test_latency_really_sleeps() -> None:
    adapter = FaultInjectingAdapter(CountingAdapter(), FaultsConfig(added_latency_ms=30))
    started = time.perf_counter()
    await adapter.generate(CALL)
    assert time.perf_counter() - started >= 0.029


async def test_a_given_rng_is_used_and_close_reaches_the_inner_adapter() -> None:
    inner = CountingAdapter()
    adapter = FaultInjectingAdapter(inner, FaultsConfig(error_rate=0.5), rng=random.Random(1))
    reference = random.Random(1)
    predicted = []
    for _ in range(20):
        reference.random()  # spike roll
        predicted.append("error" if reference.random() < 0.5 else "ok")
    assert await outcomes(adapter, 20) == predicted
    await adapter.aclose()
    assert inner.closed
