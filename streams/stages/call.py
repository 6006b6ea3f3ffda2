"""A tier's stage: call the model for each routed request, publish the attempt.

A call waits for a slot (`max_in_flight`), and a retry for its backoff, so the
tier's circuit may open while it is queued: it is checked again when the call
is about to start, and a call queued behind an open circuit is not made.  Its
attempt says so (`circuit_open`, never sent, no cost), and the evaluator turns
it into a verdict and sends the request on like any other skip.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from schemas.events import Attempt, RoutedRequest, Trigger
from streams.adapters.base import Generation, ModelAdapter, ModelCall
from streams.adapters.errors import ModelError
from streams.config import TierConfig
from streams.evaluation.decision import call_may_start, remaining_ms, skipped_call
from streams.kafka.consumed_record import ConsumedRecord
from streams.observability import tracing
from streams.stages.context import Pipeline
from streams.stages.failed_call_log import failed_calls


async def call_tier(pipeline: Pipeline, tier: TierConfig, record: ConsumedRecord) -> None:
    routed = await pipeline.decode_or_dead_letter(record, RoutedRequest, f"tier.{tier.name}")
    if routed is None:
        return
    if routed.not_before is not None:
        # Retry backoff: wait here (holding one in-flight slot) rather than hot-loop.
        wait_s = (routed.not_before - datetime.now(UTC)).total_seconds()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
    adapter = pipeline.adapters[tier.name]
    breaker = pipeline.circuits.get(tier.name)
    circuit = None if breaker is None else breaker.advance(time.monotonic())
    if call_may_start(circuit):
        with (
            tracing.attempt_span(tier.name, routed.request.request_id) as traced_attempt,
            pipeline.prometheus.calling(tier.name),
        ):
            attempt = await attempt_call(adapter, tier, routed)
            traced_attempt(attempt)
        if attempt.error_trigger is not None:
            failed_calls.failed(tier.name, attempt.error_trigger, attempt.model)
    else:
        attempt = skipped_call(routed, adapter.model_name, datetime.now(UTC))
    await pipeline.publisher.enqueue_avro(
        pipeline.topics.attempts(tier.name), routed.request.request_id, attempt
    )
    pipeline.prometheus.attempted(tier.name, attempt)


async def attempt_call(adapter: ModelAdapter, tier: TierConfig, routed: RoutedRequest) -> Attempt:
    """One model call under the tier's timeout (shortened to fit the deadline)."""
    started_at = datetime.now(UTC)
    queue_wait_ms = max((started_at - routed.routed_at).total_seconds() * 1000, 0.0)
    timeout_ms = min(tier.timeout_ms, remaining_ms(routed.request, started_at))
    request = routed.request
    call = ModelCall(
        request_id=request.request_id,
        input=request.input,
        params=request.params,
        timeout_s=max(timeout_ms, 1.0) / 1000,
    )
    clock = time.perf_counter()
    error: ModelError | None = None
    generation: Generation | None = None
    try:
        # asyncio.timeout, not wait_for: no extra task per call on the hot path.
        async with asyncio.timeout(call.timeout_s):
            generation = await adapter.generate(call)
    except TimeoutError:
        error_trigger, message = Trigger.TIMEOUT, f"no answer within {timeout_ms:.0f} ms"
    except ModelError as exc:
        error = exc
        error_trigger, message = exc.trigger, str(exc)
    except Exception as exc:  # an adapter bug is a failed attempt, not a dead worker
        error_trigger, message = Trigger.ERROR, f"{type(exc).__name__}: {exc}"
    latency_ms = (time.perf_counter() - clock) * 1000
    finished_at = datetime.now(UTC)
    if generation is None:
        return Attempt(
            routed=routed,
            model=adapter.model_name,
            error_trigger=error_trigger,
            error=message,
            retryable=bool(error.retryable)
            if error is not None
            else error_trigger is Trigger.TIMEOUT,
            retry_after_ms=None
            if error is None or error.retry_after_s is None
            else error.retry_after_s * 1000,
            latency_ms=latency_ms,
            queue_wait_ms=queue_wait_ms,
            started_at=started_at,
            finished_at=finished_at,
        )
    return Attempt(
        routed=routed,
        model=generation.model,
        output=generation.output,
        latency_ms=latency_ms,
        queue_wait_ms=queue_wait_ms,
        tokens_in=generation.tokens_in,
        tokens_out=generation.tokens_out,
        cost_usd=tier.price.cost(generation.tokens_in, generation.tokens_out),
        confidence=generation.confidence,
        finish_reason=generation.finish_reason,
        started_at=started_at,
        finished_at=finished_at,
    )
