"""Tracing: one request's spans across the stages, parentage from the caller's
`traceparent`, attributes without prompt text.

The stages run in-process (the worker's own `build_app` and stage handlers,
each called through `tracing.traced` as the stage consumer calls it); the
producer is replaced by one that keeps what the stages send, headers included,
and those records are handed to the next stage like the broker would."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from schemas.events import Request
from streams.app import build_app
from streams.kafka.consumed_record import ConsumedRecord
from streams.observability import tracing
from streams.ops.broker import EmbeddedBroker
from streams.stages.topology import pipeline_stages
from tests.conftest import pipeline_config, scripted_tier

PROMPT = "the purple elephant's secret recipe"

pytestmark = pytest.mark.asyncio(loop_scope="session")


class KeepingProducer:
    """Stands in for Faust's producer: keeps each send as the next stage's input."""

    def __init__(self) -> None:
        self.sent: deque[ConsumedRecord] = deque()

    async def send(
        self, topic: str, key: bytes, value: bytes, partition: Any, timestamp: Any, headers: Any
    ) -> asyncio.Future[None]:
        self.sent.append(ConsumedRecord(topic, 0, 0, key, value, tuple(headers or ())))
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered


@pytest.fixture
def spans() -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter, provider
    tracing.use(None)


async def test_one_request_is_one_trace_across_the_stages(
    broker: EmbeddedBroker, tmp_path: Path, spans: Any
) -> None:
    exporter, provider = spans
    config = pipeline_config(
        broker,
        tmp_path,
        [scripted_tier("primary"), scripted_tier("backup")],
        analytics={"enabled": False},
    )
    fallback = build_app(config)
    pipeline = fallback.pipeline
    producer = KeepingProducer()
    pipeline.publisher.producer = producer
    stages = {stage.topic: stage for stage in pipeline_stages(pipeline)}

    caller = provider.get_tracer("caller").start_span("caller")
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(caller))
    request = Request(request_id="traced-1", input={"text": PROMPT, "script": {"primary": "error"}})
    producer.sent.append(
        ConsumedRecord(
            fallback.topics.requests,
            0,
            0,
            b"traced-1",
            request.model_dump_json().encode(),
            tuple((k, v.encode()) for k, v in carrier.items()),
        )
    )
    handled = []
    while producer.sent:
        record = producer.sent.popleft()
        stage = stages.get(record.topic)
        if stage is None:  # verdicts, responses: no sink stage with analytics off
            handled.append(record.topic)
            continue
        await tracing.traced(stage.name, record, stage.handle)
    caller.end()
    assert fallback.topics.responses in handled

    finished = {span.name: span for span in exporter.get_finished_spans()}
    every = exporter.get_finished_spans()
    assert {span.context.trace_id for span in every} == {caller.context.trace_id}
    by_id = {span.context.span_id: span for span in every}

    def parent_name(span: Any) -> str:
        return by_id[span.parent.span_id].name

    assert finished["caller"].parent is None
    chain = {s.name: parent_name(s) for s in every if s.name not in ("attempt", "caller")}
    assert chain == {
        "route_requests": "caller",
        "call_primary": "route_requests",
        "evaluate_primary": "call_primary",
        "call_backup": "evaluate_primary",
        "evaluate_backup": "call_backup",
    }
    attempts = sorted(
        (span for span in every if span.name == "attempt"),
        key=lambda span: span.attributes["fallback.tier"],
    )
    assert [parent_name(span) for span in attempts] == ["call_backup", "call_primary"]
    backup, primary = (dict(span.attributes) for span in attempts)
    assert primary["fallback.trigger"] == "error" and primary["fallback.cost_usd"] == 0.0
    assert backup["fallback.model"] and backup["fallback.cost_usd"] == pytest.approx(0.001)
    rejected = dict(finished["evaluate_primary"].attributes)
    assert (rejected["fallback.accepted"], rejected["fallback.trigger"]) == (False, "error")
    served = dict(finished["evaluate_backup"].attributes)
    assert served["fallback.status"] == "served" and served["fallback.served_by"] == "backup"
    for span in every:
        assert all(PROMPT not in str(v) for v in span.attributes.values())
