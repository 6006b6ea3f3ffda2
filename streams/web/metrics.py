"""The /metrics page: this worker's Prometheus registry in the text exposition format.

The scrape-time gauges read the pipeline through the accessors below, so the
metric definitions (streams/observability/metrics.py) know nothing of Faust,
aiokafka or the sink.
"""

from __future__ import annotations

import time

import faust
from faust.web import Request, Response, View

from streams.evaluation.circuit import CircuitState
from streams.kafka.stage_consumer import StageConsumer
from streams.observability.metrics import (
    CONTENT_TYPE,
    PipelineState,
    SinkRows,
    StateCollector,
    consumer_lag,
)
from streams.stages.context import Pipeline


def circuit_state_by_tier(pipeline: Pipeline) -> dict[str, CircuitState]:
    now_s = time.monotonic()
    return {name: b.snapshot(now_s).state for name, b in pipeline.circuits.items()}


def sink_rows(pipeline: Pipeline) -> SinkRows | None:
    if pipeline.sink is None:
        return None
    stats = pipeline.sink.stats()
    return SinkRows(
        written=stats.written_rows, pending=stats.pending_rows, failed=stats.failed_rows
    )


def pipeline_state(pipeline: Pipeline, stages: StageConsumer) -> PipelineState:
    return PipelineState(
        circuits=lambda: circuit_state_by_tier(pipeline),
        lag=lambda: consumer_lag(stages.consumer, stages.fetched),
        tenant_spend_usd=lambda: pipeline.spend.own_snapshot(time.time()),
        sink_rows=lambda: sink_rows(pipeline),
    )


def register_metrics_page(app: faust.App, pipeline: Pipeline, stages: StageConsumer) -> None:
    metrics = pipeline.prometheus
    metrics.watch_circuits(pipeline.circuits)
    metrics.registry.register(StateCollector(pipeline_state(pipeline, stages)))

    async def scrape(web: View, request: Request) -> Response:
        return web.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    # Prometheus scrapes /metrics by default; /metrics/ matches the other pages.
    app.page("/metrics", name="metrics")(scrape)
    app.page("/metrics/", name="metrics_slash")(scrape)
