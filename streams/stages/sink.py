"""The sink stages: verdicts and responses into ClickHouse, committable once settled.

Each handler adds the row and returns a future that resolves when the row is
settled; the stage consumer only then lets the offset be committed:

- written: counted in `metrics.sunk_verdicts` / `sunk_responses` (rows written,
  not rows received);
- rejected by the store as data (`RowsRejected`, see analytics/sink.py): the
  event goes to the dead-letter topic with the store's reason, so it is kept
  and the partition moves on.

While the store is down the futures wait (the sink retries), the stage's
partitions pause at its window, and every other stage keeps serving.
"""

from __future__ import annotations

import asyncio

from analytics.errors import RowsRejected
from analytics.sink import RowReceipt
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
    receipt = await sink.add_verdict(verdict)
    return settled(pipeline, record, receipt, verdict.request_id, "sink_verdicts")


async def sink_responses(pipeline: Pipeline, record: ConsumedRecord) -> asyncio.Future[None] | None:
    sink = pipeline.sink
    assert sink is not None, "sink stages run only with analytics enabled"
    try:
        response = decode_response(record.value, pipeline.config.worker.response_format)
    except EventDecodeError as exc:
        await pipeline.dead_letter_undecodable(record, exc, "sink_responses")
        return None
    receipt = await sink.add_response(response)
    return settled(pipeline, record, receipt, response.request_id, "sink_responses")


def settled(
    pipeline: Pipeline, record: ConsumedRecord, receipt: RowReceipt, request_id: str, stage: str
) -> asyncio.Future[None]:
    """A future done once the row is written, or rejected and its event dead-lettered."""
    assert pipeline.sink is not None
    written = pipeline.sink.when_written(receipt)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_written(future: asyncio.Future[None]) -> None:
        if future.cancelled():
            done.cancel()
            return
        error = future.exception()
        if error is None:
            if stage == "sink_verdicts":
                pipeline.metrics.sunk_verdicts += 1
            else:
                pipeline.metrics.sunk_responses += 1
            done.set_result(None)
        elif isinstance(error, RowsRejected):
            # Rare: a task only for a rejected row, off the hot path.
            task = asyncio.ensure_future(
                dead_letter_rejected(pipeline, record, error, request_id, stage)
            )
            task.add_done_callback(lambda t: _pass_on(t, done))
        else:
            done.set_exception(error)

    written.add_done_callback(on_written)
    return done


async def dead_letter_rejected(
    pipeline: Pipeline, record: ConsumedRecord, error: RowsRejected, request_id: str, stage: str
) -> None:
    await pipeline.publisher.dead_letter(
        record=record,
        reason=f"the analytics store rejected the row: {error}",
        error_type=type(error).__name__,
        stage=stage,
        request_id=request_id,
    )


def _pass_on(task: asyncio.Future[None], done: asyncio.Future[None]) -> None:
    if done.done():
        return
    if task.cancelled():
        done.cancel()
    elif task.exception() is not None:
        done.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        done.set_result(None)
