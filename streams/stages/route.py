"""The router: a caller's request in, the first eligible tier's topic out."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from schemas.codec import decode_request
from schemas.errors import EventDecodeError
from streams.evaluation.decision import invalid_response, route_request
from streams.kafka.consumed_record import ConsumedRecord
from streams.stages.context import Pipeline
from streams.stages.decision_io import carry_out, decision_context


async def route_one(pipeline: Pipeline, record: ConsumedRecord) -> None:
    now = datetime.now(UTC)
    try:
        request = decode_request(record.value, pipeline.config.worker.max_request_bytes)
    except EventDecodeError as exc:
        await pipeline.dead_letter_undecodable(record, exc, "router")
        if exc.request_id:
            # The caller can be told, so nobody waits forever for an answer.
            await pipeline.publisher.respond(invalid_response(exc.request_id, exc.reason, now))
        pipeline.metrics.invalid += 1
        return
    if pipeline.seen_requests.seen_before(request.request_id, time.monotonic()):
        pipeline.metrics.duplicates += 1
        return
    outcome = route_request(request, now, decision_context(pipeline, request.tenant, now))
    await carry_out(pipeline, outcome)
    pipeline.metrics.routed += 1
