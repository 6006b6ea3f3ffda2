from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from analytics.backend import AnalyticsBackend, ChdbBackend
from analytics.errors import (
    AnalyticsError,
    AnalyticsUnavailable,
    RowsRejected,
    SinkBackpressure,
)
from analytics.queries import outcome_counts, tier_fallback_rates
from analytics.sink import ClickHouseSink, open_sink
from schemas.backoff import Backoff
from streams.config import AnalyticsConfig
from tests.analytics.sample_events import sample_responses, sample_verdicts


class RecordingBackend:
    """A real backend whose inserts are recorded and can be made to fail or stall."""

    def __init__(self, inner: AnalyticsBackend) -> None:
        self.inner = inner
        self.database = inner.database
        self.batches: list[tuple[str, int]] = []
        self.failures: list[AnalyticsError] = []  # raised by the next inserts, in order
        self.always_fail: AnalyticsError | None = None
        self.insert_calls = 0
        self.release = threading.Event()
        self.release.set()

    def command(self, sql: str) -> None:
        self.inner.command(sql)

    def query(self, sql: str) -> list[dict[str, Any]]:
        return self.inner.query(sql)

    def insert_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.insert_calls += 1
        self.release.wait(timeout=10)
        if self.always_fail is not None:
            raise self.always_fail
        if self.failures:
            raise self.failures.pop(0)
        self.inner.insert_rows(table, rows)
        self.batches.append((table, len(rows)))

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def recording(backend: ChdbBackend) -> RecordingBackend:
    return RecordingBackend(backend)


def count(backend: AnalyticsBackend, table: str) -> int:
    rows = backend.query(f"SELECT count() AS n FROM {backend.database}.{table} FINAL")
    return int(rows[0]["n"])


async def test_batches_by_size(recording: RecordingBackend) -> None:
    verdicts = sample_verdicts()[:7]
    async with ClickHouseSink(recording, batch_max_rows=3, batch_max_wait_ms=60_000) as sink:
        receipts = [await sink.add_verdict(v) for v in verdicts]
        await asyncio.wait_for(sink.wait_written(receipts[5]), 5)
        assert recording.batches == [("verdicts", 3), ("verdicts", 3)]
        assert await sink.query(f"SELECT count() AS n FROM {recording.database}.verdicts") == [
            {"n": 6}
        ]
        await sink.flush()  # the seventh row is written now, not after a minute
        assert recording.batches[-1] == ("verdicts", 1)
        assert sink.stats().written_rows["verdicts"] == 7


async def test_batches_by_time_without_reaching_size(recording: RecordingBackend) -> None:
    async with ClickHouseSink(recording, batch_max_rows=1000, batch_max_wait_ms=100) as sink:
        started = time.monotonic()
        await sink.add_verdict(sample_verdicts()[0])
        receipt = await sink.add_response(sample_responses()[0])
        await asyncio.wait_for(sink.wait_written(receipt), 5)
        waited = time.monotonic() - started
        assert 0.09 <= waited < 2
        assert sorted(recording.batches) == [("responses", 1), ("verdicts", 1)]
        assert sink.unwritten_rows == 0


async def test_flush_makes_every_added_row_durable(recording: RecordingBackend) -> None:
    async with ClickHouseSink(recording, batch_max_rows=1000, batch_max_wait_ms=60_000) as sink:
        for verdict in sample_verdicts():
            await sink.add_verdict(verdict)
        for response in sample_responses():
            await sink.add_response(response)
        await sink.flush()
        assert count(recording, "verdicts") == len(sample_verdicts())
        assert count(recording, "responses") == len(sample_responses())
        await sink.flush()  # nothing pending: returns at once


async def test_duplicates_collapse(recording: RecordingBackend) -> None:
    async with ClickHouseSink(recording, batch_max_rows=1000, batch_max_wait_ms=60_000) as sink:
        for _ in range(2):  # a replay after a crash: same events, separate batches
            for verdict in sample_verdicts():
                await sink.add_verdict(verdict)
            for response in sample_responses():
                await sink.add_response(response)
            await sink.flush()
        assert len(recording.batches) == 4
        tiers = await sink.run(tier_fallback_rates)
        outcomes = await sink.run(outcome_counts)
    assert {t.tier: t.attempts for t in tiers} == {"primary": 6, "backup": 4, "local": 1}
    assert outcomes.requests == len(sample_responses())


async def test_close_writes_what_is_buffered(tmp_path: Path) -> None:
    path = str(tmp_path / "chdb")
    config = AnalyticsConfig(chdb_path=path, database="closing", batch_max_wait_ms=60_000)
    sink = await open_sink(config)
    for verdict in sample_verdicts():
        await sink.add_verdict(verdict)
    await sink.close()
    with pytest.raises(AnalyticsError, match="closing"):
        await sink.add_verdict(sample_verdicts()[0])
    reopened = ChdbBackend(path, "closing")
    try:
        assert count(reopened, "verdicts") == len(sample_verdicts())
    finally:
        reopened.close()


FAST = Backoff(initial_s=0.01, max_s=0.02)


async def test_answer_text_is_stored_only_when_configured(tmp_path: Path) -> None:
    for store_output, expected in ((False, ""), (True, '{"text":"answer to r1"}')):
        config = AnalyticsConfig(
            chdb_path=str(tmp_path / f"chdb-{store_output}"),
            database="texts",
            store_output=store_output,
        )
        async with await open_sink(config) as sink:
            # completed now: a stored answer older than output_ttl_days is dropped on insert
            fresh = sample_responses()[0].model_copy(update={"completed_at": datetime.now(UTC)})
            await sink.add_response(fresh)
            await sink.flush()
            rows = await sink.query("SELECT output FROM texts.responses")
        assert rows == [{"output": expected}]


async def test_failed_write_is_retried_until_it_passes(recording: RecordingBackend) -> None:
    recording.failures = [
        AnalyticsUnavailable("connection refused"),
        AnalyticsError("Code: 60. Table verdicts does not exist"),  # an operator's fix
        AnalyticsUnavailable("Code: 252. Too many parts"),
    ]
    async with ClickHouseSink(
        recording, batch_max_rows=10, batch_max_wait_ms=10, backoff=FAST
    ) as sink:
        receipt = await sink.add_verdict(sample_verdicts()[0])
        await asyncio.wait_for(sink.wait_written(receipt), 5)
        assert recording.insert_calls == 4
        assert recording.batches == [("verdicts", 1)]
        stats = sink.stats()
        assert stats.failed_writes == 3
        assert stats.written_rows["verdicts"] == 1
        assert stats.failed_rows["verdicts"] == 0
        assert stats.last_error is None


async def test_an_outage_is_waited_out_for_as_long_as_it_lasts(
    recording: RecordingBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """The old sink gave up after 5 tries and failed every later row, each with a
    longer chained traceback; this one keeps the rows and logs one line per try."""
    recording.always_fail = AnalyticsUnavailable("ClickHouse: INSERT: connection refused")
    verdicts = sample_verdicts()
    async with ClickHouseSink(
        recording, batch_max_rows=100, batch_max_wait_ms=10, backoff=FAST
    ) as sink:
        receipts = [await sink.add_verdict(v) for v in verdicts]
        waiting = [sink.when_written(r) for r in receipts]
        await asyncio.sleep(0.5)
        assert recording.insert_calls >= 10
        assert not any(w.done() for w in waiting)
        assert sink.stats().pending_rows["verdicts"] == len(verdicts)
        assert "connection refused" in (sink.stats().last_error or "")
        more = await sink.add_verdict(verdicts[0])  # adding goes on during the outage
        recording.always_fail = None
        await asyncio.wait_for(asyncio.gather(*waiting, sink.wait_written(more)), 5)
        assert sink.stats().written_rows["verdicts"] == len(verdicts) + 1
    lines = [r for r in caplog.records if r.name == "analytics.sink"]
    assert len(lines) == sink.stats().failed_writes
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in lines)


class RejectingBackend(RecordingBackend):
    """Rejects, as ClickHouse does, a whole INSERT holding a row of a poisoned request."""

    def __init__(self, inner: AnalyticsBackend, poisoned: set[str]) -> None:
        super().__init__(inner)
        self.poisoned = poisoned

    def insert_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.insert_calls += 1
        if any(row["request_id"] in self.poisoned for row in rows):
            raise RowsRejected("Code: 27. Cannot parse input: expected '\"' before: 'x'")
        self.inner.insert_rows(table, rows)
        self.batches.append((table, len(rows)))


async def test_rejected_rows_are_isolated_and_failed_the_rest_written(
    backend: ChdbBackend,
) -> None:
    rejecting = RejectingBackend(backend, poisoned={"r3"})
    verdicts = sample_verdicts()
    async with ClickHouseSink(rejecting, batch_max_rows=100, batch_max_wait_ms=10_000) as sink:
        receipts = [await sink.add_verdict(v) for v in verdicts]
        waiting = [sink.when_written(r) for r in receipts]
        await asyncio.wait_for(sink.flush(), 5)  # a flush settles, it does not raise
        results = await asyncio.gather(*waiting, return_exceptions=True)
        rejected = [v.request_id for v, result in zip(verdicts, results, strict=True) if result]
        assert rejected == ["r3", "r3", "r3"]  # its three attempts, nothing else
        assert all(isinstance(r, RowsRejected) for r in results if r is not None)
        stats = sink.stats()
        assert stats.written_rows["verdicts"] == len(verdicts) - 3
        assert stats.failed_rows["verdicts"] == 3
        assert stats.unwritten_rows == 0
        assert count(backend, "verdicts") == len(verdicts) - 3
        # a receipt asked for after its row was rejected still says so
        late = await sink.add_verdict(verdicts[3])  # r3 again
        await asyncio.wait_for(sink.flush(), 5)
        with pytest.raises(RowsRejected):
            await sink.wait_written(late)


async def test_close_gives_up_after_its_timeout_and_reports_rows_left(
    recording: RecordingBackend,
) -> None:
    recording.always_fail = AnalyticsUnavailable("down")
    sink = ClickHouseSink(recording, batch_max_rows=10, batch_max_wait_ms=10, backoff=FAST)
    await sink.add_verdict(sample_verdicts()[0])
    await asyncio.sleep(0.05)
    assert await asyncio.wait_for(sink.close(timeout_s=0.2), 5) == 1
    with pytest.raises(AnalyticsError, match="closing"):
        await sink.add_verdict(sample_verdicts()[1])


async def test_add_awaits_when_the_buffer_is_full(recording: RecordingBackend) -> None:
    recording.release.clear()  # the first write stalls
    verdicts = sample_verdicts()
    async with ClickHouseSink(
        recording, batch_max_rows=1, batch_max_wait_ms=10, high_water_rows=2
    ) as sink:
        await sink.add_verdict(verdicts[0])
        await sink.add_verdict(verdicts[1])
        third = asyncio.create_task(sink.add_verdict(verdicts[2]))
        await asyncio.sleep(0.1)
        assert not third.done()  # paused, as a Kafka consumer loop would be
        recording.release.set()
        await asyncio.wait_for(third, 5)
        await sink.flush()
        assert sink.stats().written_rows["verdicts"] == 3


async def test_add_raises_backpressure_when_asked_not_to_wait(
    recording: RecordingBackend,
) -> None:
    recording.release.clear()
    async with ClickHouseSink(
        recording,
        batch_max_rows=1,
        batch_max_wait_ms=250,
        high_water_rows=1,
        block_when_full=False,
    ) as sink:
        await sink.add_verdict(sample_verdicts()[0])
        with pytest.raises(SinkBackpressure) as raised:
            await sink.add_verdict(sample_verdicts()[1])
        assert raised.value.retry_after_s == pytest.approx(0.25)
        assert raised.value.retryable
        recording.release.set()


async def test_queries_run_on_the_sink_executor_thread(recording: RecordingBackend) -> None:
    async with ClickHouseSink(recording) as sink:
        thread_name = await sink.run(lambda _: threading.current_thread().name)
        assert thread_name.startswith("analytics")
        assert await sink.query("SELECT 1 AS one") == [{"one": 1}]


async def test_event_loop_stays_responsive_while_writing(recording: RecordingBackend) -> None:
    verdict = sample_verdicts()[0]
    rows = [verdict.model_copy(update={"request_id": f"load-{i}"}) for i in range(20_000)]
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with ClickHouseSink(recording, batch_max_rows=5000, batch_max_wait_ms=60_000) as sink:
        for row in rows:  # no await suspends here: the writer starts on flush
            await sink.add_verdict(row)
        ticker = asyncio.create_task(tick())
        started = time.monotonic()
        await sink.flush()
        elapsed = time.monotonic() - started
        ticker.cancel()
    assert [size for _, size in recording.batches] == [5000] * 4
    # The writes run on the executor thread; the loop keeps ticking meanwhile.
    assert ticks >= 0.5 * elapsed / 0.01
