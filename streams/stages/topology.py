"""The stages of one worker, in the order a request meets them, and what a
failed record means.  Each arrow is a topic, keyed by request_id:

    requests ─▶ router ─▶ tier.<A> ─▶ tier stage A ─▶ attempts.<A> ─▶ evaluator A
                                                                  ├─▶ verdicts ─▶ sink
                                                                  ├─▶ tier.<B> (fallback / retry)
                                                                  └─▶ responses ─▶ callers, sink
"""

from __future__ import annotations

from functools import partial

from analytics.errors import AnalyticsError
from streams.kafka.consumed_record import ConsumedRecord
from streams.kafka.publisher import PublishError
from streams.kafka.stage_consumer import ErrorOutcome, Stage
from streams.stages.call import call_tier
from streams.stages.context import Pipeline
from streams.stages.evaluate import evaluate_one
from streams.stages.route import route_one
from streams.stages.sink import sink_responses, sink_verdicts

#: records a CPU-only stage (router, evaluator) may hold before its partitions pause
ROUTING_WINDOW = 500


def pipeline_stages(pipeline: Pipeline) -> list[Stage]:
    config = pipeline.config
    catalog = pipeline.publisher.names.base  # plain names: the consumer follows generations
    # Priorities: the further along a record is, the sooner it is handled.
    stages = [
        Stage(
            "route_requests",
            catalog.requests,
            partial(route_one, pipeline),
            ROUTING_WINDOW,
            entry=True,
        )
    ]
    for tier in config.tiers:
        stages.append(
            Stage(
                f"call_{tier.name}",
                catalog.tier(tier.name),
                partial(call_tier, pipeline, tier),
                tier.max_in_flight,
                concurrent=True,
                priority=1,
                in_pipeline=True,
            )
        )
        stages.append(
            Stage(
                f"evaluate_{tier.name}",
                catalog.attempts(tier.name),
                partial(evaluate_one, pipeline, tier),
                ROUTING_WINDOW,
                priority=2,
                in_pipeline=True,
            )
        )
    if config.analytics.enabled:
        # Rows wait for a batch write; let a few batches' worth be outstanding.
        window = max(config.analytics.batch_max_rows * 2, 1000)
        stages.append(
            Stage(
                "sink_verdicts",
                catalog.verdicts,
                partial(sink_verdicts, pipeline),
                window,
                priority=3,
            )
        )
        stages.append(
            Stage(
                "sink_responses",
                catalog.responses,
                partial(sink_responses, pipeline),
                window,
                priority=3,
            )
        )
    return stages


async def settle_failed_record(
    pipeline: Pipeline, record: ConsumedRecord, exc: Exception, stage: str
) -> ErrorOutcome:
    """A handler raised: settle it (dead-letter it), or leave it un-finished."""
    if isinstance(exc, AnalyticsError) or (isinstance(exc, PublishError) and exc.retryable):
        # Outputs could not be delivered/written: leave the record un-finished
        # so a restart replays it, rather than dead-letter a good event.
        # (An output that can never be sent, e.g. over the producer's size
        # limit, is dead-lettered below: replaying it would freeze the partition.)
        return ErrorOutcome.LEAVE_UNFINISHED
    await pipeline.publisher.dead_letter(
        record=record,
        reason=f"internal error: {type(exc).__name__}: {exc}",
        error_type=type(exc).__name__,
        stage=stage,
        request_id=None,
    )
    return ErrorOutcome.SETTLED
