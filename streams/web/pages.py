"""The worker's HTTP pages (Faust's web server).

A chDB directory can be opened by one process only, and the worker holds it,
so `fallback report` asks the running worker for the report over HTTP instead
of opening the database itself.

    GET /health/    readiness: partitions assigned, spend table caught up, records in flight
    GET /circuits/  each tier's circuit state
    GET /metrics/   counters
    GET /report/?since_minutes=N   the analytics report (JSON)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import faust
from faust.web import Request, Response, View

from analytics.report import build_report
from streams.kafka.stage_consumer import StageConsumer
from streams.stages.context import Pipeline


def circuit_states(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    return {name: breaker.snapshot().as_dict() for name, breaker in pipeline.circuits.items()}


def register_pages(app: faust.App, pipeline: Pipeline, stages: StageConsumer) -> None:
    @app.page("/health/")
    async def health(web: View, request: Request) -> Response:
        # Ready = the stages hold partitions and the spend table has read its topic.
        spend_ready = pipeline.spend.table is not None and pipeline.spend.table.caught_up
        stage_assignment = stages.assignment()
        ready = bool(stage_assignment) and spend_ready and not stages.rebalancing
        body = {
            "ready": ready,
            "assigned_partitions": len(stage_assignment),
            "stage_partitions": len(stage_assignment),
            "spend_table_caught_up": spend_ready,
            "stalled_events": stages.stalled,
            "in_flight": stages.in_flight(),
            "app_id": pipeline.config.worker.app_id,
        }
        return web.json(body, status=200 if ready and not stages.stalled else 503)

    @app.page("/circuits/")
    async def circuits(web: View, request: Request) -> Response:
        return web.json(circuit_states(pipeline))

    @app.page("/metrics/")
    async def metrics(web: View, request: Request) -> Response:
        return web.json(
            {
                **vars(pipeline.metrics),
                "stalled": stages.stalled,
                "in_flight": stages.in_flight(),
                "admission_pauses": stages.admission_pauses,
                "circuits": circuit_states(pipeline),
                "tenant_spend_usd": pipeline.spend.own_snapshot(datetime.now(UTC).timestamp()),
                "tenant_spend_table": pipeline.spend.table_snapshot(),
                "spend_table": pipeline.spend.table.progress()
                if pipeline.spend.table is not None
                else {},
            }
        )

    @app.page("/report/")
    async def report(web: View, request: Request) -> Response:
        if pipeline.sink is None:
            return web.json({"error": "analytics.enabled is false"}, status=404)
        minutes = request.query.get("since_minutes")
        since = None
        if minutes:
            try:
                since = datetime.now(UTC) - timedelta(minutes=float(minutes))
            except ValueError:
                return web.json({"error": f"since_minutes={minutes!r} is not a number"}, status=400)
        await pipeline.sink.flush()
        states = circuit_states(pipeline)
        result = await pipeline.sink.run(
            lambda backend: build_report(backend, since=since, circuits=states)
        )
        return web.json(result.model_dump(mode="json"))
