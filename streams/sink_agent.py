"""The sink agents: verdicts and responses into ClickHouse, acked once written."""

from __future__ import annotations

from typing import Any

from schemas.codec import decode_response
from schemas.errors import EventDecodeError
from schemas.events import Verdict
from streams.pipeline import Pipeline


async def sink_verdicts(pipeline: Pipeline, event: Any) -> None:
    sink = pipeline.sink
    assert sink is not None, "sink agents run only with analytics enabled"
    verdict = await pipeline.decode_or_dead_letter(event, Verdict, "sink_verdicts")
    if verdict is None:
        return
    # Returning means the row is durable; only then may the offset be committed.
    await sink.wait_written(await sink.add_verdict(verdict))
    pipeline.metrics.sunk_verdicts += 1


async def sink_responses(pipeline: Pipeline, event: Any) -> None:
    sink = pipeline.sink
    assert sink is not None, "sink agents run only with analytics enabled"
    try:
        response = decode_response(event.message.value, pipeline.config.worker.response_format)
    except EventDecodeError as exc:
        await pipeline.publisher.dead_letter(
            event=event,
            reason=exc.reason,
            error_type=type(exc).__name__,
            stage="sink_responses",
            request_id=None,
        )
        return
    await sink.wait_written(await sink.add_response(response))
    pipeline.metrics.sunk_responses += 1
