"""The sink stages: verdicts and responses into ClickHouse, committable once written.

Each handler adds the row and returns a future that resolves when the row is
durable; the stage consumer only then lets the offset be committed.
"""

from __future__ import annotations

import asyncio

from schemas.codec import decode_response
from schemas.errors import EventDecodeError
from schemas.events import Verdict
from streams.kafka.consumed_record import ConsumedRecord
from streams.stages.context import Pipeline


async def sink_verdicts(pipeline: Pipeline, record: ConsumedRecord) -> asyncio.Future[None] | None:
    sink = pipeline.sink
    assert sink is not None, "sink stages run only with analytics enabled"
    verdict = await pipeline.decode_or_dead_letter(record, Verdict, "sink_verdicts")
    if verdict is None:
        return None
    pipeline.metrics.sunk_verdicts += 1
    return sink.when_written(await sink.add_verdict(verdict))


async def sink_responses(pipeline: Pipeline, record: ConsumedRecord) -> asyncio.Future[None] | None:
    sink = pipeline.sink
    assert sink is not None, "sink stages run only with analytics enabled"
    try:
        response = decode_response(record.value, pipeline.config.worker.response_format)
    except EventDecodeError as exc:
        await pipeline.dead_letter_undecodable(record, exc, "sink_responses")
        return None
    pipeline.metrics.sunk_responses += 1
    return sink.when_written(await sink.add_response(response))
