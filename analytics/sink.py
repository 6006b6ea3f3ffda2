"""`ClickHouseSink`: verdicts and responses batched into ClickHouse/chDB.

How to drive it (the Kafka consumer's contract):

1. `receipt = await sink.add_verdict(v)` / `await sink.add_response(r)` buffer
   one row and return at once with a `RowReceipt`; nothing is written yet.
2. A background writer task writes one batch per table when the table holds
   `batch_max_rows` rows, or its oldest row is `batch_max_wait_ms` old, or a
   flush asks for it.
3. A row is durable when `await sink.wait_written(receipt)` returns, or when
   `await sink.flush()` returns (flush waits for every row added before it to
   settle: written, or rejected as below).  Commit Kafka offsets only after
   that: flush sinks, then commit.
4. `await sink.close()` writes everything still buffered (within a timeout),
   then closes the backend and the executor.

Backpressure: when more than `high_water_rows` rows (default 10 x
`batch_max_rows`, at least `HIGH_WATER_MIN_ROWS`) are unwritten, `add_*`
*awaits* until the writer catches up, which pauses a Kafka consumer loop.
With `block_when_full=False` it raises `SinkBackpressure(retry_after_s=...)`.

Failures (analytics must never stop serving, and must lose nothing silently).
A write runs on the sink's single-thread executor (chDB blocks the calling
thread, and the asyncio loop must stay free), inside `schemas.backoff.retry_async`
with the sink's `Backoff` (capped, full jitter):

- The store is down or overloaded (connection refused, HTTP 5xx, TOO_MANY_PARTS:
  `AnalyticsUnavailable`, `retryable`): the batch is retried until it passes.
  Rows wait in the buffer, counted in `stats().pending_rows`; their offsets stay
  uncommitted, so a restart meanwhile re-reads them.
- The store refuses the statement, not the rows (unknown table, refused
  credentials: a plain `AnalyticsError`): that needs an operator, not other
  rows, so it is retried the same way; the rows wait for the fix.
- The store rejects the rows as data (`RowsRejected`: cannot parse or convert
  them): the same rows would fail for ever, so the batch is split in halves
  until each rejected row stands alone; every other row is written.  A
  rejected row settles as *failed*: its receipt raises `RowsRejected`
  (`wait_written` / `when_written`), it is counted in `stats().failed_rows`,
  and the caller dead-letters its event (the sink stage does).

Each failed write attempt logs one line, without a traceback.

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

from analytics.backend import AnalyticsBackend, one_line, open_backend
from analytics.config import AnalyticsConfig
from analytics.errors import AnalyticsError, RowsRejected, SinkBackpressure
from analytics.migrate import apply_migrations
from analytics.rows import (
    METADATA_ONLY,
    RESPONSES_TABLE,
    VERDICTS_TABLE,
    RowOptions,
    response_row,
    verdict_row,
)
from schemas.backoff import Backoff, retry_async
from schemas.events import Response, Verdict

log = logging.getLogger(__name__)

T = TypeVar("T")

HIGH_WATER_BATCHES = 10
#: the worker's sink stages hold at most ~2 windows of rows (2 x batch_max_rows, at
#: least 1,000) before pausing their partitions; `add_*` blocking above that would
#: stall the consumer loop every stage shares, so the mark sits well above it
HIGH_WATER_MIN_ROWS = 50_000
#: 0.1 s doubling to 5 s: a recovered store gets the rows within about 5 s
WRITE_BACKOFF = Backoff(initial_s=0.1, max_s=5.0)
#: how long `close()` waits for buffered rows by default (a store that is down
#: must not hold a worker's shutdown for ever; the rows' events are re-read)
CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RowReceipt:
    """Names one added row: the `sequence`-th row added to `table` (1-based)."""

    table: str
    sequence: int


@dataclass(frozen=True)
class SinkStats:
    """Rows per table: `pending` = added, not yet settled; `written` = durable in the
    store; `failed` = rejected by the store as data (dead-lettered by the caller).
    `failed_writes` counts write attempts that raised (an outage adds one per try)."""

    pending_rows: dict[str, int]
    written_rows: dict[str, int]
    failed_rows: dict[str, int]
    failed_writes: int
    last_error: str | None

    @property
    def unwritten_rows(self) -> int:
        return sum(self.pending_rows.values())


@dataclass
class _TableBuffer:
    rows: list[dict[str, Any]] = field(default_factory=list)
    added_at: list[float] = field(default_factory=list)  # monotonic time of each row
    added: int = 0  # rows ever added
    settled: int = 0  # rows written or rejected; rows settle in order
    written: int = 0
    failed: int = 0
    #: rejected rows' sequence -> their error, until their receipt is asked for
    rejected: dict[int, RowsRejected] = field(default_factory=dict)
    flush_target: int = 0  # a flush wants rows up to here written now
    waiters: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)
    #: flushes waiting until `settled` reaches their target (a rejection does not fail them)
    flushes: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)


def _keep_trying(exc: BaseException) -> bool:
    """Every failure but a rejection of the rows themselves is waited out (see above)."""
    return not isinstance(exc, RowsRejected)


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
        backoff: Backoff = WRITE_BACKOFF,
        row_options: RowOptions = METADATA_ONLY,
        executor: ThreadPoolExecutor | None = None,
        owns_executor: bool | None = None,
    ) -> None:
        if batch_max_rows < 1 or batch_max_wait_ms < 1:
            raise ValueError("batch_max_rows and batch_max_wait_ms must be at least 1")
        self.backend = backend
        self.batch_max_rows = batch_max_rows
        self.batch_max_wait_s = batch_max_wait_ms / 1000
        self.high_water_rows = high_water_rows or max(
            HIGH_WATER_BATCHES * batch_max_rows, HIGH_WATER_MIN_ROWS
        )
        self.block_when_full = block_when_full
        self.backoff = backoff
        self.row_options = row_options
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
        self._unwritten_rows = 0  # over all tables; checked on every add
        self._failed_writes = 0
        self._last_error: str | None = None

    async def __aenter__(self) -> ClickHouseSink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------ adding ----

    async def add_verdict(self, verdict: Verdict) -> RowReceipt:
        return await self._add(VERDICTS_TABLE, verdict_row(verdict))

    async def add_response(self, response: Response) -> RowReceipt:
        return await self._add(RESPONSES_TABLE, response_row(response, self.row_options))

    async def _add(self, table: str, row: dict[str, Any]) -> RowReceipt:
        self._raise_if_closing()
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
            self._raise_if_closing()
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
        """Return once the row is written; raise `RowsRejected` if the store refused it."""
        await self.when_written(receipt)

    def when_written(self, receipt: RowReceipt) -> asyncio.Future[None]:
        """A future that resolves once the row is written (`RowsRejected` if refused)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        buffer = self._tables[receipt.table]
        if buffer.settled >= receipt.sequence:
            _settle(future, buffer.rejected.pop(receipt.sequence, None))
        else:
            heapq.heappush(buffer.waiters, (receipt.sequence, next(self._waiter_ids), future))
        return future

    async def flush(self) -> None:
        """Write every row added so far, now; return when each is settled.

        While the store is down this waits until it is back: bound it with
        `asyncio.wait_for` where a caller cannot wait (a web page)."""
        self._raise_if_closing()
        wake, _ = self._start_writer()
        targets = []
        for buffer in self._tables.values():
            if buffer.added > buffer.settled:
                buffer.flush_target = max(buffer.flush_target, buffer.added)
                targets.append((buffer, buffer.added))
        wake.set()
        for buffer, target in targets:
            if buffer.settled >= target:
                continue
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            buffer.flushes.append((target, future))
            await future

    async def close(self, timeout_s: float | None = CLOSE_TIMEOUT_S) -> int:
        """Write what is buffered (for at most `timeout_s`), then release the backend
        and the executor.  Returns the rows left unwritten: their events were never
        committed, so the next owner of their partitions reads them again."""
        if self._closed:
            return 0
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
                    log.warning(
                        "analytics sink closed with %d rows unwritten after %s s (%s); "
                        "their events are uncommitted and will be read again",
                        self.unwritten_rows,
                        timeout_s,
                        self._last_error or "no error",
                    )
            return self.unwritten_rows
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
            pending_rows={table: len(buffer.rows) for table, buffer in self._tables.items()},
            written_rows={table: buffer.written for table, buffer in self._tables.items()},
            failed_rows={table: buffer.failed for table, buffer in self._tables.items()},
            failed_writes=self._failed_writes,
            last_error=self._last_error,
        )

    def _raise_if_closing(self) -> None:
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
            await self._write_batch(table)

    def _due_table(self, now: float) -> str | None:
        for table, buffer in self._tables.items():
            if not buffer.rows:
                continue
            if (
                self._closing
                or len(buffer.rows) >= self.batch_max_rows
                or buffer.flush_target > buffer.settled
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
        rejected = await self._write_isolating_rejected(table, batch)
        # Rows added while the write ran sit behind the batch; only the batch leaves.
        del buffer.rows[: len(batch)]
        del buffer.added_at[: len(batch)]
        first = buffer.settled + 1
        for index, error in rejected:
            buffer.rejected[first + index] = error
        buffer.settled += len(batch)
        buffer.failed += len(rejected)
        buffer.written += len(batch) - len(rejected)
        self._unwritten_rows -= len(batch)
        while buffer.waiters and buffer.waiters[0][0] <= buffer.settled:
            sequence, _, future = heapq.heappop(buffer.waiters)
            _settle(future, buffer.rejected.pop(sequence, None))
        still_waiting = []
        for target, future in buffer.flushes:
            if target <= buffer.settled:
                _settle(future, None)
            else:
                still_waiting.append((target, future))
        buffer.flushes = still_waiting
        if self._space is not None and self.unwritten_rows < self.high_water_rows:
            self._space.set()

    async def _write_isolating_rejected(
        self, table: str, batch: list[dict[str, Any]]
    ) -> list[tuple[int, RowsRejected]]:
        """Write `batch`; when the store rejects rows, halve until each rejected row is
        alone.  Returns (index in batch, error) of the rows rejected."""
        rejected: list[tuple[int, RowsRejected]] = []
        chunks = [(0, batch)]  # a stack; the first half is written first
        while chunks:
            offset, rows = chunks.pop()
            try:
                await self._write_retrying(table, rows)
            except RowsRejected as exc:
                if len(rows) == 1:
                    rejected.append((offset, exc))
                    log.warning(
                        "analytics sink: the store rejected a %s row; it is counted failed "
                        "and its event dead-lettered: %s",
                        table,
                        exc,
                    )
                    continue
                log.warning(
                    "analytics sink: the store rejected %d rows of %s; splitting the batch "
                    "to find the rejected ones: %s",
                    len(rows),
                    table,
                    exc,
                )
                half = len(rows) // 2
                chunks.append((offset + half, rows[half:]))
                chunks.append((offset, rows[:half]))
        return rejected

    async def _write_retrying(self, table: str, rows: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()

        async def insert() -> None:
            try:
                await loop.run_in_executor(self.executor, self.backend.insert_rows, table, rows)
            except Exception as exc:
                self._failed_writes += 1
                error = (
                    exc
                    if isinstance(exc, AnalyticsError)
                    else AnalyticsError(one_line(f"writing {table}: {type(exc).__name__}: {exc}"))
                )
                self._last_error = f"{type(error).__name__}: {error}"
                raise error from None  # one line per attempt: no chained traceback
            self._last_error = None

        await retry_async(
            insert,
            self.backoff,
            max_tries=None,
            what=f"analytics sink: writing {len(rows)} rows to {table}",
            logger=log,
            retryable=_keep_trying,
        )


def _settle(future: asyncio.Future[None], rejection: RowsRejected | None) -> None:
    if future.done():
        return
    if rejection is None:
        future.set_result(None)
    else:
        future.set_exception(rejection)


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
        row_options=RowOptions(
            store_output=config.store_output, output_ttl_days=config.output_ttl_days
        ),
        executor=executor,
        owns_executor=True,
    )
