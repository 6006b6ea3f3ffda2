"""The decision's I/O for the router and the evaluators: read the values a
decision consults, then carry out the outcome it returned.

Nothing awaits between the two, so the breakers a decision saw are the ones
its events are applied to.
"""

from __future__ import annotations

import time
from datetime import datetime

from streams.evaluation.circuit import apply_breaker_events, circuit_views
from streams.evaluation.decision import DecisionContext, Outcome
from streams.stages.context import Pipeline


def decision_context(pipeline: Pipeline, tenant: str, now: datetime) -> DecisionContext:
    """The breakers advanced to now, and `tenant`'s spend, as values."""
    return DecisionContext(
        config=pipeline.config,
        circuits=circuit_views(pipeline.circuits, time.monotonic()),
        safety=pipeline.safety,
        tenant_spend_usd=pipeline.spend.spent_usd(tenant, now.timestamp()),
        now=now,
        rng=pipeline.rng,
    )


async def carry_out(pipeline: Pipeline, outcome: Outcome, reply_to: str | None) -> None:
    """Breaker events and charges first (before the next decision reads them),
    then the verdicts and the forward or response into the producer (a
    response to `reply_to` if set, see `TopicNames.reply_topic`)."""
    apply_breaker_events(pipeline.circuits, outcome.breaker_events, time.monotonic())
    for charge in outcome.charges:
        pipeline.spend.charge(charge.tenant, charge.usd, charge.charged_at)
    await pipeline.publish_outcome(outcome, reply_to)
