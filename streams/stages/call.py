"""A tier's stage: call the model for each routed request, publish the attempt.

A call waits for a slot (`max_in_flight`), and a retry for its backoff, so the
tier's circuit may open while it is queued: it is checked again when the call
is about to start, and a call queued behind an open circuit is not made.  Its
attempt says so (`circuit_open`, never sent, no cost), and the evaluator turns
it into a verdict and sends the request on like any other skip.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime

from schemas.events import Attempt, RoutedRequest
from streams.adapters.base import CallClock, Generation, ModelAdapter, ModelCall
from streams.adapters.errors import ModelError, ModelTimeout, NotSentBeforeDeadline
from streams.config import TierConfig
from streams.evaluation.decision import (
    MIN_DEADLINE_SHARE,
    call_may_start,
    remaining_ms,
    skipped_call,
)
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
    """One model call under the tier's timeout, counted from when the request is sent.

    Time the call waits inside the worker before it is sent (for a pooled
    connection, a thread: the adapter says when, see `CallClock`) is queue
    time: bounded by the request's deadline, added to `queue_wait_ms`, never
    taken from the model's limit.  A call still queued when less than
    `MIN_DEADLINE_SHARE` of the tier's timeout is left before the deadline is
    not sent at all: trigger `deadline`, `called` false, never the model's timeout.
    """
    started_at = datetime.now(UTC)
    stage_wait_ms = max((started_at - routed.routed_at).total_seconds() * 1000, 0.0)
    left_ms = remaining_ms(routed.request, started_at)
    request = routed.request
    deadline_at: float | None = None
    send_by: float | None = None
    if not math.isinf(left_ms):
        deadline_at = asyncio.get_running_loop().time() + left_ms / 1000
        send_by = deadline_at - tier.timeout_ms * MIN_DEADLINE_SHARE / 1000
    error: ModelError | None = None
    generation: Generation | None = None
    timed_out = False
    try:
        # asyncio.timeout, not wait_for: no extra task per call on the hot path.
        async with asyncio.timeout(None) as timer:
            clock = CallClock(
                timer, limit_s=tier.timeout_ms / 1000, send_by=send_by, deadline_at=deadline_at
            )
            call = ModelCall(
                request_id=request.request_id,
                input=request.input,
                params=request.params,
                timeout_s=max(min(tier.timeout_ms, left_ms), 1.0) / 1000,
                clock=clock,
            )
            generation = await adapter.generate(call)
    except TimeoutError:
        timed_out = True
    except ModelError as exc:
        error = exc
    except Exception as exc:  # an adapter bug is a failed attempt, not a dead worker
        error = ModelError(f"{type(exc).__name__}: {exc}")
    finished_at = datetime.now(UTC)
    latency_ms = clock.on_wire_s() * 1000
    queue_wait_ms = stage_wait_ms + clock.queue_wait_s() * 1000
    if generation is not None:
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
    if timed_out and not clock.was_sent:
        error = NotSentBeforeDeadline(
            f"queued {clock.queue_wait_s() * 1000:.0f} ms in the worker until less than "
            f"{MIN_DEADLINE_SHARE:.0%} of timeout_ms={tier.timeout_ms:g} was left before "
            "the deadline; never sent"
        )
    elif timed_out:
        limit_s = clock.call_limit_s()
        limit = "" if limit_s is None else f"within {limit_s * 1000:.0f} ms "
        error = ModelTimeout(f"no answer {limit}of sending")
    assert error is not None
    return Attempt(
        routed=routed,
        model=adapter.model_name,
        error_trigger=error.trigger,
        error=str(error),
        retryable=bool(error.retryable),
        retry_after_ms=None if error.retry_after_s is None else error.retry_after_s * 1000,
        latency_ms=latency_ms,
        queue_wait_ms=queue_wait_ms,
        called=not isinstance(error, NotSentBeforeDeadline),
        started_at=started_at,
        finished_at=finished_at,
    )
