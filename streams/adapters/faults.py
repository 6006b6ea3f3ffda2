"""Fault injection for demos and drills: wraps any adapter, driven by `FaultsConfig`.

Per call, in this order:

1. inside an outage window → `ModelUnavailable("injected outage ...")` at once;
2. sleep `added_latency_ms`, plus `spike_latency_ms` with probability `spike_rate`;
3. with probability `error_rate` → `ModelUnavailable("injected fault ...")`
   (after the latency: a failing backend is rarely instant);
4. otherwise the wrapped adapter answers.

Outage windows are measured from the tier's first call (not from worker
start, which may take seconds to join its consumer group), so a drill's timing
is the same however long start-up took.  Each call draws exactly two random
numbers (spike, error) whatever the rates, so a given `seed` yields the same
fault sequence for the same calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from streams.adapters.base import Generation, ModelAdapter, ModelCall
from streams.adapters.errors import ModelUnavailable
from streams.config import FaultsConfig, OutageConfig

__all__ = ["FaultInjectingAdapter", "current_outage", "in_outage"]


def current_outage(outages: Sequence[OutageConfig], elapsed_s: float) -> OutageConfig | None:
    """The outage window `elapsed_s` (seconds since start) falls in, if any."""
    for outage in outages:
        since_start = elapsed_s - outage.start_s
        if since_start < 0:
            continue
        if outage.every_s is not None:
            since_start %= outage.every_s
        if since_start < outage.duration_s:
            return outage
    return None


def in_outage(outages: Sequence[OutageConfig], elapsed_s: float) -> bool:
    return current_outage(outages, elapsed_s) is not None


def _describe(outage: OutageConfig) -> str:
    repeat = f", every {outage.every_s:g}s" if outage.every_s is not None else ""
    return f"{outage.duration_s:g}s from {outage.start_s:g}s{repeat}"


class FaultInjectingAdapter:
    def __init__(
        self,
        inner: ModelAdapter,
        faults: FaultsConfig,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.inner = inner
        self.faults = faults
        self.model_name = inner.model_name
        self._clock = clock
        self._started_at: float | None = None
        self._rng = rng if rng is not None else random.Random(faults.seed)
        self._sleep = sleep

    async def generate(self, call: ModelCall) -> Generation:
        # The injected faults stand for the model itself: its time limit runs from here,
        # and the inner adapter's own queue (if any) counts as the model's time too.
        call.clock.sent()
        faults = self.faults
        now = self._clock()
        if self._started_at is None:
            self._started_at = now
        elapsed_s = now - self._started_at
        outage = current_outage(faults.outages, elapsed_s)
        if outage is not None:
            raise ModelUnavailable(
                f"injected outage ({_describe(outage)}) at {elapsed_s:.1f}s after the first call"
            )
        spike_roll, error_roll = self._rng.random(), self._rng.random()
        delay_ms = faults.added_latency_ms
        if spike_roll < faults.spike_rate:
            delay_ms += faults.spike_latency_ms
        if delay_ms > 0:
            await self._sleep(delay_ms / 1000)
        if error_roll < faults.error_rate:
            raise ModelUnavailable(f"injected fault: error_rate {faults.error_rate:g}")
        generation = await self.inner.generate(call)
        if delay_ms <= 0:
            return generation
        # Say so in the answer, so analytics can tell injected latency from real.
        extra = {**generation.extra, "injected_latency_ms": delay_ms}
        return dataclasses.replace(generation, extra=extra)

    async def aclose(self) -> None:
        await self.inner.aclose()
