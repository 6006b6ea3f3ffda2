"""OpenTelemetry tracing across the topics: one trace per request.

Off unless `OTEL_TRACES_EXPORTER` names an exporter (standard OTEL_* variables;
`configure_from_env` at worker start).  Off, every hook is one check of a
module global: no span, no header, no context work per record.

On, each stage's record is handled inside a span whose parent is the
`traceparent` header of the record (W3C trace context, through the globally
configured propagator), and every record a stage produces carries the current
span's context in its headers: the caller's request -> router -> tier call
(with an `attempt` span) -> evaluator -> response share one trace.  Attributes
are tier, model, trigger, cost and ids; never prompt or answer text.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any, TypeVar

from opentelemetry import context, propagate, trace

from schemas.errors import ConfigError
from schemas.events import Attempt, Response, Verdict
from streams.kafka.consumed_record import ConsumedRecord

T = TypeVar("T")

TRACER_NAME = "model-fallback"
_tracer: trace.Tracer | None = None

Headers = list[tuple[str, bytes]]


def use(provider: trace.TracerProvider | None) -> None:
    """Trace through `provider` from now on (None: off)."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer(TRACER_NAME)


def enabled() -> bool:
    return _tracer is not None


def configure_from_env() -> bool:
    """Set up the SDK from OTEL_* variables; True if tracing is on.

    `OTEL_TRACES_EXPORTER` (comma-separated; `console`, `otlp` with
    opentelemetry-exporter-otlp installed, ...) picks exporters through their
    standard entry points; `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`
    name the resource; the exporters read their own variables
    (`OTEL_EXPORTER_OTLP_ENDPOINT`, ...)."""
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    if not names or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    available = {e.name: e for e in entry_points(group="opentelemetry_traces_exporter")}
    provider = TracerProvider(resource=Resource.create())
    for name in names:
        if name not in available:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER: no exporter {name!r} installed"
                f" (available: {', '.join(sorted(available)) or 'none'})"
            )
        provider.add_span_processor(BatchSpanProcessor(available[name].load()()))
    trace.set_tracer_provider(provider)
    use(provider)
    return True


def _parent(record: ConsumedRecord) -> context.Context:
    carrier = {k: v.decode("latin-1") for k, v in record.headers or ()}
    return propagate.extract(carrier)


async def traced(
    stage: str, record: ConsumedRecord, handle: Callable[[ConsumedRecord], Awaitable[T]]
) -> T:
    """Run a stage's handler on one record, in a span continuing the record's trace."""
    tracer = _tracer
    if tracer is None:
        return await handle(record)
    with tracer.start_as_current_span(
        stage,
        context=_parent(record),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": record.topic,
            "messaging.kafka.destination.partition": record.partition,
            "messaging.kafka.message.offset": record.offset,
        },
    ):
        return await handle(record)


def kafka_headers() -> Headers | None:
    """The current span's context as Kafka headers (None when tracing is off)."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode("latin-1")) for k, v in carrier.items()] or None


@contextmanager
def attempt_span(tier: str, request_id: str) -> Iterator[Callable[[Attempt], None]]:
    """A span around one model call; call the yielded function with its attempt."""
    tracer = _tracer
    if tracer is None:
        yield _ignore
        return
    with tracer.start_as_current_span(
        "attempt", attributes={"fallback.tier": tier, "fallback.request_id": request_id}
    ) as span:

        def finished(attempt: Attempt) -> None:
            span.set_attributes(attempt_attributes(attempt))

        yield finished


def attempt_attributes(attempt: Attempt) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "fallback.model": attempt.model,
        "fallback.cost_usd": attempt.cost_usd,
        "fallback.latency_ms": attempt.latency_ms,
        "fallback.attempt": attempt.routed.attempt,
    }
    if attempt.error_trigger is not None:
        attributes["fallback.trigger"] = str(attempt.error_trigger)
    return attributes


def verdict_published(verdict: Verdict) -> None:
    """An event on the current (evaluator or router) span, with the verdict's figures."""
    if _tracer is None:
        return
    attributes: dict[str, Any] = {
        "fallback.tier": verdict.tier,
        "fallback.attempt": verdict.attempt,
        "fallback.accepted": verdict.accepted,
        "fallback.cost_usd": verdict.cost_usd,
        "fallback.called": verdict.called,
    }
    if verdict.model is not None:
        attributes["fallback.model"] = verdict.model
    if verdict.trigger is not None:
        attributes["fallback.trigger"] = str(verdict.trigger)
    if verdict.fallback_type is not None:
        attributes["fallback.fallback_type"] = str(verdict.fallback_type)
    span = trace.get_current_span()
    span.set_attributes(attributes)
    span.add_event("verdict", attributes)


def responded(response: Response) -> None:
    if _tracer is None:
        return
    span = trace.get_current_span()
    span.set_attributes(
        {
            "fallback.request_id": response.request_id,
            "fallback.status": response.status,
            "fallback.served_by": response.served_by or "",
            "fallback.cost_usd": response.cost_usd,
        }
    )


def _ignore(attempt: Attempt) -> None:
    return None
