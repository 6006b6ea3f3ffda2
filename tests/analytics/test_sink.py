from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from analytics.backend import AnalyticsBackend, ChdbBackend
from analytics.errors import AnalyticsError, AnalyticsUnavailable, SinkBackpressure
from analytics.queries import outcome_counts, tier_fallback_rates
from analytics.sink import ClickHouseSink, open_sink
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


async def test_failed_write_is_retried_with_backoff(recording: RecordingBackend) -> None:
    recording.failures = [AnalyticsUnavailable("down"), AnalyticsError("rejected once")]
    async with ClickHouseSink(
        recording, batch_max_rows=10, batch_max_wait_ms=10, initial_backoff_s=0.01
    ) as sink:
        await sink.add_verdict(sample_verdicts()[0])
        await asyncio.wait_for(sink.flush(), 5)
        assert recording.insert_calls == 3
        assert recording.batches == [("verdicts", 1)]
        assert sink.stats().failed is None


async def test_non_retryable_failure_fails_the_sink_without_dropping_rows(
    recording: RecordingBackend,
) -> None:
    recording.always_fail = AnalyticsError("Code: 27. Cannot parse input")
    sink = ClickHouseSink(
        recording,
        batch_max_rows=10,
        batch_max_wait_ms=10,
        max_write_attempts=3,
        initial_backoff_s=0.01,
    )
    receipt = await sink.add_verdict(sample_verdicts()[0])
    with pytest.raises(AnalyticsError, match="Cannot parse input"):
        await asyncio.wait_for(sink.flush(), 5)
    assert recording.insert_calls == 3
    with pytest.raises(AnalyticsError, match="Cannot parse input"):
        await sink.wait_written(receipt)
    with pytest.raises(AnalyticsError, match="Cannot parse input"):
        await sink.add_verdict(sample_verdicts()[1])
    assert sink.unwritten_rows == 1
    assert sink.stats().failed is not None
    with pytest.raises(AnalyticsError, match="Cannot parse input"):
        await sink.close()


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
