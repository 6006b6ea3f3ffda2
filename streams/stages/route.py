"""The router: a caller's request in, the first eligible tier's topic out."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from schemas.errors import EventDecodeError
from schemas.intake import RequestLimits, read_request
from streams.config import WorkerConfig
from streams.evaluation.decision import invalid_response, route_request
from streams.kafka.consumed_record import ConsumedRecord
from streams.stages.context import Pipeline
from streams.stages.decision_io import carry_out, decision_context


async def route_one(pipeline: Pipeline, record: ConsumedRecord) -> None:
    now = datetime.now(UTC)
    reply_to = pipeline.publisher.names.reply_topic(record.topic)
    try:
        request = read_request(record.value, request_limits(pipeline.config.worker), now)
    except EventDecodeError as exc:
        if exc.request_id is not None:
            # The caller can be told, so nobody waits forever for an answer; told
            # first, because the dead letter below waits for the broker's ack.
            # Once per request_id, valid or not, like every response.
            if pipeline.seen_requests.seen_before(exc.request_id, time.monotonic()):
                pipeline.metrics.duplicates += 1
            else:
                response = invalid_response(exc.request_id, exc.reason, now)
                await pipeline.publisher.respond(response, reply_to)
        await pipeline.dead_letter_undecodable(record, exc, "router")
        pipeline.metrics.invalid += 1
        return
    if pipeline.seen_requests.seen_before(request.request_id, time.monotonic()):
        pipeline.metrics.duplicates += 1
        return
    ctx = decision_context(pipeline, request.tenant, now)
    await carry_out(pipeline, route_request(request, now, ctx, reply_to), reply_to)
    pipeline.metrics.routed += 1


def request_limits(worker: WorkerConfig) -> RequestLimits:
    return RequestLimits(
        max_bytes=worker.max_request_bytes,
        max_depth=worker.max_request_depth,
        max_deadline_ms=worker.max_deadline_ms,
        created_at_max_age_s=worker.created_at_max_age_s,
        created_at_max_ahead_s=worker.created_at_max_ahead_s,
    )
