"""A tier's evaluator: judge each attempt, publish its verdict and what follows."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from schemas.events import Attempt
from streams.config import TierConfig
from streams.evaluation.decision import evaluate_attempt
from streams.kafka.consumed_record import ConsumedRecord
from streams.stages.context import Pipeline


async def evaluate_one(pipeline: Pipeline, tier: TierConfig, record: ConsumedRecord) -> None:
    attempt = await pipeline.decode_or_dead_letter(record, Attempt, f"evaluator.{tier.name}")
    if attempt is None:
        return
    key = (attempt.routed.request.request_id, attempt.routed.attempt)
    if pipeline.seen_attempts.seen_before(key, time.monotonic()):
        pipeline.metrics.duplicates += 1
        return
    now = datetime.now(UTC)
    if attempt.cost_usd > 0:
        # Charged whether or not the answer is accepted: spend counts rejected attempts too.
        pipeline.record_spend(attempt.routed.request.tenant, attempt.cost_usd, attempt.finished_at)
    outcome = evaluate_attempt(attempt, pipeline.decision_context(now))
    await pipeline.publish_outcome(outcome)
