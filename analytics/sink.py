"""`ClickHouseSink`: verdicts and responses batched into ClickHouse/chDB.

How to drive it (the Kafka consumer's contract):

1. `receipt = await sink.add_verdict(v)` / `await sink.add_response(r)` buffer
   one row and return at once with a `RowReceipt`; nothing is written yet.
2. A background writer task writes one batch per table when the table holds
   `batch_max_rows` rows, or its oldest row is `batch_max_wait_ms` old, or a
   flush asks for it.
3. A row is durable when `await sink.wait_written(receipt)` returns, or when
   `await sink.flush()` returns (flush waits for every row added before it).
   Commit Kafka offsets only after that: flush sinks, then commit.
4. `await sink.close()` writes everything still buffered, then closes the
   backend and the executor.

Backpressure: when more than `high_water_rows` rows (default 10 x
`batch_max_rows`) are unwritten, `add_*` *awaits* until the writer catches up,
which pauses a Kafka consumer loop naturally.  With `block_when_full=False`
it raises `SinkBackpressure(retry_after_s=...)` instead.

Failures: a write runs on the sink's single-thread executor (chDB blocks the
calling thread, and the asyncio loop must stay free).  A failed write is
retried inside the writer with exponential backoff and the batch stays in the
buffer: retryable errors (`AnalyticsUnavailable`) are retried until they pass;
a non-retryable error (the store rejects the rows) is retried
`max_write_attempts` times and then the sink *fails*: every waiter and every
later `add_*`/`flush` raise that error, and no row is dropped silently -- the
caller has not committed their offsets, so Kafka replays them after restart.

Report queries share the same executor (`await sink.query(sql)`,
`await sink.run(build_report)`), since with chDB the sink's process owns the
only session on the data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from analytics.backend import AnalyticsBackend, open_backend
from analytics.config import AnalyticsConfig
from analytics.errors import AnalyticsError, AnalyticsUnavailable, SinkBackpressure
from analytics.migrate import apply_migrations
from analytics.rows import RESPONSES_TABLE, VERDICTS_TABLE, response_row, verdict_row
from schemas.events import Response, Verdict

log = logging.getLogger(__name__)

T = TypeVar("T")

HIGH_WATER_BATCHES = 10


@dataclass(frozen=True)
class RowReceipt:
    """Names one added row: the `sequence`-th row added to `table` (1-based)."""

    table: str
    sequence: int


@dataclass(frozen=True)
class SinkStats:
    unwritten_rows: int
    written_rows: dict[str, int]
    failed: str | None


@dataclass
class _TableBuffer:
    rows: list[dict[str, Any]] = field(default_factory=list)
    added_at: list[float] = field(default_factory=list)  # monotonic time of each row
    added: int = 0  # rows ever added
    written: int = 0  # rows durably written; rows are written in order
    flush_target: int = 0  # a flush wants rows up to here written now
    waiters: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)


class ClickHouseSink:
    """Batches rows per table by size and time and writes them on one executor thread."""

    def __init__(
        self,
        backend: AnalyticsBackend,
        *,
        batch_max_rows: int = 5000,
        batch_max_wait_ms: int = 500,
        high_water_rows: int | None = None,
        block_when_full: bool = True,
        max_write_attempts: int = 5,
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        executor: ThreadPoolExecutor | None = None,
        owns_executor: bool | None = None,
    ) -> None:
        if batch_max_rows < 1 or batch_max_wait_ms < 1:
            raise ValueError("batch_max_rows and batch_max_wait_ms must be at least 1")
        self.backend = backend
        self.batch_max_rows = batch_max_rows
        self.batch_max_wait_s = batch_max_wait_ms / 1000
        self.high_water_rows = high_water_rows or HIGH_WATER_BATCHES * batch_max_rows
        self.block_when_full = block_when_full
        self.max_write_attempts = max_write_attempts
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        # An executor we create (or are handed to own) is shut down by close().
        self._owns_executor = executor is None if owns_executor is None else owns_executor
        self.executor = executor or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="analytics"
        )
        self._tables: dict[str, _TableBuffer] = {
            VERDICTS_TABLE: _TableBuffer(),
            RESPONSES_TABLE: _TableBuffer(),
        }
        self._waiter_ids = itertools.count()
        self._wake: asyncio.Event | None = None
        self._space: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._failure: AnalyticsError | None = None
        self._unwritten_rows = 0  # over all tables; checked on every add

    async def __aenter__(self) -> ClickHouseSink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------ adding ----

    async def add_verdict(self, verdict: Verdict) -> RowReceipt:
        return await self._add(VERDICTS_TABLE, verdict_row(verdict))

    async def add_response(self, response: Response) -> RowReceipt:
        return await self._add(RESPONSES_TABLE, response_row(response))

    async def _add(self, table: str, row: dict[str, Any]) -> RowReceipt:
        self._raise_if_unusable()
        wake, space = self._start_writer()
        while self.unwritten_rows >= self.high_water_rows:
            if not self.block_when_full:
                raise SinkBackpressure(
                    f"analytics sink holds {self.unwritten_rows} unwritten rows "
                    f"(high-water mark {self.high_water_rows})",
                    retry_after_s=self.batch_max_wait_s,
                )
            space.clear()
            await space.wait()
            self._raise_if_unusable()
        buffer = self._tables[table]
        buffer.rows.append(row)
        buffer.added_at.append(time.monotonic())
        buffer.added += 1
        self._unwritten_rows += 1
        # Wake the writer on a full batch, and on a first row so it arms its timer.
        if len(buffer.rows) == 1 or len(buffer.rows) >= self.batch_max_rows:
            wake.set()
        return RowReceipt(table, buffer.added)

    # -------------------------------------------------------- durability ----

    async def wait_written(self, receipt: RowReceipt) -> None:
        """Return once the row (and every row added before it to its table) is written."""
        await self.when_written(receipt)

    def when_written(self, receipt: RowReceipt) -> asyncio.Future[None]:
        """A future that resolves once the row is written (or fails with the sink)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        buffer = self._tables[receipt.table]
        if buffer.written >= receipt.sequence:
            future.set_result(None)
        elif self._failure is not None:
            future.set_exception(self._failure)
        else:
            heapq.heappush(buffer.waiters, (receipt.sequence, next(self._waiter_ids), future))
        return future

    async def flush(self) -> None:
        """Write every row added so far, now, and return when all of it is durable."""
        self._raise_if_unusable()
        wake, _ = self._start_writer()
        receipts = []
        for table, buffer in self._tables.items():
            if buffer.added > buffer.written:
                buffer.flush_target = max(buffer.flush_target, buffer.added)
                receipts.append(RowReceipt(table, buffer.added))
        wake.set()
        for receipt in receipts:
            await self.wait_written(receipt)

    async def close(self, timeout_s: float | None = None) -> None:
        """Write what is buffered, then release the backend and the executor.

        Raises the sink's failure, or `AnalyticsUnavailable` when the rows could
        not be written within `timeout_s`; the backend is closed either way.
        """
        if self._closed:
            return
        self._closing = True
        try:
            if self._writer is not None and self._wake is not None:
                self._wake.set()
                try:
                    await asyncio.wait_for(asyncio.shield(self._writer), timeout_s)
                except TimeoutError:
                    self._writer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._writer
                    raise AnalyticsUnavailable(
                        f"analytics sink closed with {self.unwritten_rows} rows unwritten "
                        f"after {timeout_s} s"
                    ) from None
            if self._failure is not None:
                raise self._failure
        finally:
            self._closed = True
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self.executor, self.backend.close)
            finally:
                if self._owns_executor:
                    self.executor.shutdown(wait=False)

    # ----------------------------------------------------------- queries ----

    async def query(self, sql: str) -> list[dict[str, Any]]:
        """Run a SELECT on the sink's executor (the thread that owns the chDB session)."""
        return await self.run(lambda backend: backend.query(sql))

    async def run(self, work: Callable[[AnalyticsBackend], T]) -> T:
        """Run blocking `work(backend)` on the sink's executor, e.g. `build_report`."""
        if self._closed:
            raise AnalyticsError("analytics sink is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, work, self.backend)

    # ------------------------------------------------------------- state ----

    @property
    def unwritten_rows(self) -> int:
        return self._unwritten_rows

    def stats(self) -> SinkStats:
        return SinkStats(
            unwritten_rows=self.unwritten_rows,
            written_rows={table: buffer.written for table, buffer in self._tables.items()},
            failed=str(self._failure) if self._failure else None,
        )

    def _raise_if_unusable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing:
            raise AnalyticsError("analytics sink is closing")

    def _start_writer(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._wake is None or self._space is None:
            self._wake = asyncio.Event()
            self._space = asyncio.Event()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="analytics-sink-writer")
        return self._wake, self._space

    # ------------------------------------------------------------ writer ----

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            now = time.monotonic()
            table = self._due_table(now)
            if table is None:
                if self._closing and self.unwritten_rows == 0:
                    return
                # No await between the check and clear(): an add cannot slip in between.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._seconds_until_due(now))
                continue
            try:
                await self._write_batch(table)
            except AnalyticsError as exc:
                self._fail(exc)
                return

    def _due_table(self, now: float) -> str | None:
        for table, buffer in self._tables.items():
            if not buffer.rows:
                continue
            if (
                self._closing
                or len(buffer.rows) >= self.batch_max_rows
                or buffer.flush_target > buffer.written
                or now - buffer.added_at[0] >= self.batch_max_wait_s
            ):
                return table
        return None

    def _seconds_until_due(self, now: float) -> float | None:
        deadlines = [
            buffer.added_at[0] + self.batch_max_wait_s
            for buffer in self._tables.values()
            if buffer.rows
        ]
        return max(0.0, min(deadlines) - now) if deadlines else None

    async def _write_batch(self, table: str) -> None:
        buffer = self._tables[table]
        batch = buffer.rows[: self.batch_max_rows]
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            try:
                await loop.run_in_executor(self.executor, self.backend.insert_rows, table, batch)
                break
            except Exception as exc:
                error = (
                    exc
                    if isinstance(exc, AnalyticsError)
                    else AnalyticsError(f"writing {table}: {exc!r}")
                )
                if not error.retryable and attempt >= self.max_write_attempts:
                    raise error from exc
                delay = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
                log.warning(
                    "analytics sink: writing %d rows to %s failed (attempt %d), retrying in "
                    "%.2f s: %s",
                    len(batch),
                    table,
                    attempt,
                    delay,
                    error,
                )
                await asyncio.sleep(delay)
        # Rows added while the write ran sit behind the batch; only the batch leaves.
        del buffer.rows[: len(batch)]
        del buffer.added_at[: len(batch)]
        buffer.written += len(batch)
        self._unwritten_rows -= len(batch)
        while buffer.waiters and buffer.waiters[0][0] <= buffer.written:
            _, _, future = heapq.heappop(buffer.waiters)
            if not future.done():
                future.set_result(None)
        if self._space is not None and self.unwritten_rows < self.high_water_rows:
            self._space.set()

    def _fail(self, error: AnalyticsError) -> None:
        log.error("analytics sink failed, %d rows unwritten: %s", self.unwritten_rows, error)
        self._failure = error
        for buffer in self._tables.values():
            for _, _, future in buffer.waiters:
                if not future.done():
                    future.set_exception(error)
            buffer.waiters.clear()
        if self._space is not None:
            self._space.set()  # wake blocked add_* so they raise the failure


async def open_sink(config: AnalyticsConfig) -> ClickHouseSink:
    """Open the configured backend, apply migrations and return a sink, all on its executor."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="analytics")
    loop = asyncio.get_running_loop()

    def open_and_migrate() -> AnalyticsBackend:
        backend = open_backend(config)
        try:
            applied = apply_migrations(backend)
        except BaseException:
            backend.close()
            raise
        if applied:
            log.info("analytics: applied migrations %s", ", ".join(applied))
        return backend

    try:
        backend = await loop.run_in_executor(executor, open_and_migrate)
    except BaseException:
        executor.shutdown(wait=False)
        raise
    return ClickHouseSink(
        backend,
        batch_max_rows=config.batch_max_rows,
        batch_max_wait_ms=config.batch_max_wait_ms,
        executor=executor,
        owns_executor=True,
    )
