"""The router: a caller's request in, the first eligible tier's topic out."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from schemas.codec import decode_request
from schemas.errors import EventDecodeError
from streams.evaluation.decision import invalid_response, route_request
from streams.kafka.consumed_record import ConsumedRecord
from streams.stages.context import Pipeline


async def route_one(pipeline: Pipeline, record: ConsumedRecord) -> None:
    now = datetime.now(UTC)
    try:
        request = decode_request(record.value, pipeline.config.worker.max_request_bytes)
    except EventDecodeError as exc:
        if exc.request_id:
            # The caller can be told, so nobody waits forever for an answer; told
            # first, because the dead letter below waits for the broker's ack.
            await pipeline.publisher.respond(invalid_response(exc.request_id, exc.reason, now))
        await pipeline.dead_letter_undecodable(record, exc, "router")
        pipeline.metrics.invalid += 1
        return
    if pipeline.seen_requests.seen_before(request.request_id, time.monotonic()):
        pipeline.metrics.duplicates += 1
        return
    outcome = route_request(request, now, pipeline.decision_context(now))
    await pipeline.publish_outcome(outcome)
    pipeline.metrics.routed += 1
