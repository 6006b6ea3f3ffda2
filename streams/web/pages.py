"""The worker's HTTP pages (Faust's web server).

A chDB directory can be opened by one process only, and the worker holds it,
so `fallback report` asks the running worker for the report over HTTP instead
of opening the database itself.

    GET /health/    readiness: partitions assigned, spend table caught up, records in flight
    GET /circuits/  each tier's circuit state
    GET /metrics    Prometheus metrics, text exposition format (also /metrics/;
                    streams/web/metrics.py, docs/metrics.md)
    GET /stats/     counters (JSON)
    GET /report/?since_minutes=N&tenant=T&tier=X   the analytics report (JSON)
    GET /report/series/            the report's series over time (streams/web/series.py)
    POST /sql/      read-only SQL on the analytics store, off by default (web/sql.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
from faust.web import Request, Response, View

from analytics.report import build_report
from streams.kafka.stage_consumer import StageConsumer
from streams.stages.context import Pipeline
from streams.web.metrics import register_metrics_page
from streams.web.series import register_series_page
from streams.web.sql import register_sql_page

#: how long /report/ waits for buffered rows to be written before it queries
REPORT_FLUSH_S = 2.0


def circuit_states(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    now_s = time.monotonic()
    return {name: b.snapshot(now_s).as_dict() for name, b in pipeline.circuits.items()}


def register_pages(app: faust.App, pipeline: Pipeline, stages: StageConsumer) -> None:
    register_series_page(app, pipeline)
    register_sql_page(app, pipeline)

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

    @app.page("/stats/")
    async def stats(web: View, request: Request) -> Response:
        return web.json(
            {
                **vars(pipeline.metrics),
                "stalled": stages.stalled,
                **pipeline.publisher.counters(),
                "in_flight": stages.in_flight(),
                "admission_pauses": stages.admission_pauses,
                "circuits": circuit_states(pipeline),
                "analytics_sink": asdict(pipeline.sink.stats()) if pipeline.sink else None,
                "tenant_spend_usd": pipeline.spend.own_snapshot(datetime.now(UTC).timestamp()),
                "tenant_spend_table": pipeline.spend.table_snapshot(),
                "spend_table": pipeline.spend.table.progress()
                if pipeline.spend.table is not None
                else {},
            }
        )

    register_metrics_page(app, pipeline, stages)

    @app.page("/report/")
    async def report(web: View, request: Request) -> Response:
        if pipeline.sink is None:
            return web.json({"error": "analytics.enabled is false"}, status=404)
        minutes = request.query.get("since_minutes")
        tenant = request.query.get("tenant") or None
        tier = request.query.get("tier") or None
        since = None
        if minutes:
            try:
                since = datetime.now(UTC) - timedelta(minutes=float(minutes))
            except ValueError:
                return web.json({"error": f"since_minutes={minutes!r} is not a number"}, status=400)
        # Fresh figures when the store answers; during an outage, what it has.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pipeline.sink.flush(), REPORT_FLUSH_S)
        states = circuit_states(pipeline)
        result = await pipeline.sink.run(
            lambda backend: build_report(
                backend,
                since=since,
                circuits=states,
                tenant=tenant,
                tier=tier,
                primary=pipeline.config.primary_tier,
            )
        )
        return web.json(result.model_dump(mode="json"))
