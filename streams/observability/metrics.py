"""The worker's Prometheus metrics: every metric object and collector, one registry per app.

Counters and histograms are updated where the event happens (one call each:
`responded`, `judged`, `calling`, `circuit_moved`, `dead_lettered`).  Gauges
that mirror state (circuits, consumer lag, sink rows, tenant spend) are read at
scrape time by `StateCollector` through small accessor functions, so nothing
has to keep them in step.  docs/metrics.md lists every series and its labels.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.events import Attempt, Response, Trigger, Verdict
from streams.evaluation.circuit import CircuitBreaker, CircuitState

#: `fallback_circuit_state` values (the dashboard relies on them)
CIRCUIT_STATE_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}

#: seconds; model calls run from milliseconds (local models) to a minute (hosted, slow)
LATENCY_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

#: exposition content type (text format 0.0.4)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def reason_class(error_type: str) -> str:
    """The error's type name: a bounded label, never the free-text reason."""
    return error_type or "unknown"


class PrometheusMetrics:
    """One worker's metrics in its own `CollectorRegistry` (not the process-global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "fallback_requests", "Final responses sent, by status.", ["status"], registry=r
        )
        self.request_duration = Histogram(
            "fallback_request_duration_seconds",
            "End-to-end latency of a final response (request created to response).",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.attempts = Counter(
            "fallback_attempts",
            "Attempts a tier stage published (called or skipped), by tier and the"
            " call's own failure trigger ('' when the model answered).",
            ["tier", "trigger", "called"],
            registry=r,
        )
        self.verdicts = Counter(
            "fallback_verdicts",
            "Verdicts published, by tier and outcome.",
            ["tier", "trigger", "fallback_type", "accepted"],
            registry=r,
        )
        self.call_duration = Histogram(
            "fallback_call_duration_seconds",
            "Duration of one model call, by tier (calls made only).",
            ["tier"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.calls_in_flight = Gauge(
            "fallback_calls_in_flight", "Model calls under way, by tier.", ["tier"], registry=r
        )
        self.circuit_transitions = Counter(
            "fallback_circuit_transitions",
            "Circuit state changes, by tier.",
            ["tier", "from", "to"],
            registry=r,
        )
        self.dead_letters = Counter(
            "fallback_dead_letters",
            "Records sent to the dead-letter topic, by stage and reason class.",
            ["stage", "reason_class"],
            registry=r,
        )

    # ------------------------------------------------------------ events ----

    def responded(self, response: Response) -> None:
        self.requests.labels(response.status).inc()
        if response.status != "invalid":
            self.request_duration.observe(response.latency_ms / 1000)

    def attempted(self, tier: str, attempt: Attempt) -> None:
        trigger = "" if attempt.error_trigger is None else str(attempt.error_trigger)
        called = "false" if attempt.error_trigger is Trigger.CIRCUIT_OPEN else "true"
        self.attempts.labels(tier, trigger, called).inc()

    def judged(self, verdict: Verdict) -> None:
        self.verdicts.labels(
            verdict.tier,
            "" if verdict.trigger is None else str(verdict.trigger),
            "" if verdict.fallback_type is None else str(verdict.fallback_type),
            "true" if verdict.accepted else "false",
        ).inc()

    @contextlib.contextmanager
    def calling(self, tier: str) -> Iterator[None]:
        """Around one model call: in flight while inside, its duration observed after."""
        in_flight = self.calls_in_flight.labels(tier)
        in_flight.inc()
        started = time.perf_counter()
        try:
            yield
        finally:
            in_flight.dec()
            self.call_duration.labels(tier).observe(time.perf_counter() - started)

    def circuit_moved(self, tier: str, before: CircuitState, after: CircuitState) -> None:
        self.circuit_transitions.labels(tier, str(before), str(after)).inc()

    def dead_lettered(self, stage: str, error_type: str) -> None:
        self.dead_letters.labels(stage, reason_class(error_type)).inc()

    def watch_circuits(self, circuits: Mapping[str, CircuitBreaker]) -> None:
        """Count every transition of these breakers."""
        for breaker in circuits.values():
            breaker.on_transition = self.circuit_moved

    # ------------------------------------------------------------ scrape ----

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class PipelineState:
    """What the scrape-time gauges read; each a plain function, so the owners'
    internals can change behind them."""

    circuits: Callable[[], Mapping[str, CircuitState]]
    lag: Callable[[], Mapping[tuple[str, int], int]]
    tenant_spend_usd: Callable[[], Mapping[str, float]]
    sink_rows: Callable[[], SinkRows | None]
    tiers: Iterable[str] = ()


@dataclass(frozen=True)
class SinkRows:
    written: Mapping[str, int]
    pending: Mapping[str, int]
    failed: Mapping[str, int]


class StateCollector(Collector):
    """Gauges read at scrape time (and the sink's counters, which the sink keeps)."""

    def __init__(self, state: PipelineState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []  # unchecked: the series come and go with the state

    def collect(self) -> Iterable[Metric]:
        circuit = GaugeMetricFamily(
            "fallback_circuit_state",
            "Circuit state by tier: 0 closed, 1 half-open, 2 open.",
            labels=["tier"],
        )
        for tier, state in self.state.circuits().items():
            circuit.add_metric([tier], CIRCUIT_STATE_VALUE[state])
        yield circuit

        lag = GaugeMetricFamily(
            "fallback_consumer_lag_records",
            "Records not yet consumed by this worker, per assigned topic-partition.",
            labels=["topic", "partition"],
        )
        for (topic, partition), records in sorted(self.state.lag().items()):
            lag.add_metric([topic, str(partition)], records)
        yield lag

        spend = GaugeMetricFamily(
            "fallback_tenant_spend_usd",
            "Spend in each tenant's current budget window, as this worker knows it.",
            labels=["tenant"],
        )
        for tenant, usd in sorted(self.state.tenant_spend_usd().items()):
            spend.add_metric([tenant], usd)
        yield spend

        rows = self.state.sink_rows()
        if rows is None:
            return
        written = CounterMetricFamily(
            "fallback_sink_rows_written", "Rows written to analytics, by table.", labels=["table"]
        )
        failed = CounterMetricFamily(
            "fallback_sink_rows_failed",
            "Rows analytics could not write, by table.",
            labels=["table"],
        )
        pending = GaugeMetricFamily(
            "fallback_sink_rows_pending",
            "Rows added to analytics and not yet written, by table.",
            labels=["table"],
        )
        for table, count in sorted(rows.written.items()):
            written.add_metric([table], count)
        for table, count in sorted(rows.failed.items()):
            failed.add_metric([table], count)
        for table, count in sorted(rows.pending.items()):
            pending.add_metric([table], count)
        yield written
        yield failed
        yield pending


def consumer_lag(consumer: Any, fetched: Mapping[Any, int]) -> dict[tuple[str, int], int]:
    """Per assigned partition: the log end offset less the next offset to fetch.

    `consumer` is an aiokafka consumer; its `highwater` is what the last fetch
    response said, so this costs no broker round trip at scrape time."""
    if consumer is None:
        return {}
    lag: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is None:
            continue
        # A partition with a known end and nothing fetched had an empty fetch: caught up.
        position = fetched.get(tp, end)
        lag[(tp.topic, tp.partition)] = max(end - position, 0)
    return lag
