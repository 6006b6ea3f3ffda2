"""A tier's evaluator: judge each attempt, publish its verdict and what follows."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from schemas.codec import decode_avro
from schemas.errors import EventDecodeError
from schemas.events import Attempt, Spend
from streams.config import TierConfig
from streams.decision import evaluate_attempt
from streams.pipeline import Pipeline


async def evaluate_one(pipeline: Pipeline, tier: TierConfig, event: Any) -> None:
    try:
        attempt = decode_avro(Attempt, event.message.value)
    except EventDecodeError as exc:
        await pipeline.publisher.dead_letter(
            event=event,
            reason=exc.reason,
            error_type=type(exc).__name__,
            stage=f"evaluator.{tier.name}",
            request_id=None,
        )
        return
    key = (attempt.routed.request.request_id, attempt.routed.attempt)
    if pipeline.seen_attempts.seen_before(key, time.monotonic()):
        pipeline.metrics.duplicates += 1
        return
    now = datetime.now(UTC)
    if attempt.cost_usd > 0:
        # Charged whether or not the answer is accepted: spend counts rejected attempts too.
        request = attempt.routed.request
        await pipeline.record_spend(
            Spend(
                tenant=request.tenant,
                usd=attempt.cost_usd,
                request_id=request.request_id,
                attempt=attempt.routed.attempt,
                charged_at=attempt.finished_at,
            )
        )
    outcome = evaluate_attempt(attempt, pipeline.decision_context(now))
    await pipeline.publish_outcome(outcome)
