"""A tier's evaluator: judge each attempt, publish its verdict and what follows."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from schemas.events import Attempt
from streams.config import TierConfig
from streams.evaluation.decision import evaluate_attempt
from streams.kafka.consumed_record import ConsumedRecord
from streams.stages.context import Pipeline
from streams.stages.decision_io import carry_out, decision_context


async def evaluate_one(pipeline: Pipeline, tier: TierConfig, record: ConsumedRecord) -> None:
    attempt = await pipeline.decode_or_dead_letter(record, Attempt, f"evaluator.{tier.name}")
    if attempt is None:
        return
    key = (attempt.routed.request.request_id, attempt.routed.attempt)
    if pipeline.seen_attempts.seen_before(key, time.monotonic()):
        pipeline.metrics.duplicates += 1
        return
    now = datetime.now(UTC)
    ctx = decision_context(pipeline, attempt.routed.request.tenant, now)
    await carry_out(pipeline, evaluate_attempt(attempt, ctx), attempt.routed.reply_to)
