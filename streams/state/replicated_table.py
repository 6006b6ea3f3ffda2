"""State every worker holds whole: a table folded from one topic, read from its start.

Each worker reads every partition of the topic with its own consumer, assigned
(no consumer group), and folds each event into a dict.  No group means no
join and no rebalance: workers coming and going never touch the table, and a
worker's copy is complete once its read reaches the end of the topic.

Why not Faust's GlobalTable, which it replaces: on every rebalance Faust
compared the last changelog offset it had read with the broker's end offset
and raised `ConsistencyError` when the first was higher (faust-streaming
#158), which crashed the surviving worker of a join or leave.  The embedded
broker (Tansu, `tansu-storage/src/dynostore.rs`) answers ListOffsets(LATEST)
with the first offset of the newest stored batch + 1, ignoring how many
records the batch holds: after batches of five records at offsets 10-14 it
says 11, while its fetch responses carry the true high watermark, 15.  So
"caught up" here means: the position reached the high watermark of a fetch
response, never `end_offsets()`.

The topic is the table's only state: a restart reads it again.  Its events
must therefore be commutative deltas or upserts whose fold is cheap, and the
topic's retention bounds both what the table can know and how long a start
takes to catch up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, ItemsView
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from schemas.backoff import Backoff
from streams.kafka.consumed_record import ConsumedRecord
from streams.state.recent_keys import RecentKeys

log = logging.getLogger(__name__)

E = TypeVar("E")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: how long one fetch round waits for new events; a quiet topic costs one request per this
DEFAULT_FETCH_MAX_WAIT_MS = 100
#: records one fetch round hands over at most (keeps the event loop responsive in a replay)
FETCH_MAX_RECORDS = 2000
#: a read that fails (broker gone) is retried after this, growing to the cap
READ_BACKOFF = Backoff(initial_s=0.2, max_s=5.0)
#: while waiting to catch up, say where the read is this often
CATCH_UP_REPORT_S = 10.0
#: a duplicate follows its original within one producer retry; far fewer keys suffice
DEDUPE_MAX_KEYS = 100_000


@dataclass(frozen=True)
class TableFold(Generic[E, K, V]):
    """How one topic becomes a table: decode each record, skip repeats, fold it in.

    `decode` raises on a record it cannot read; `event_id` names an event so a
    redelivered copy is folded once; `apply` folds one event into the table in
    place.  A record that `decode` or `apply` raises on is counted
    (`unreadable`), logged and skipped.
    """

    decode: Callable[[ConsumedRecord], E]
    apply: Callable[[dict[K, V], E], None]
    event_id: Callable[[E], Hashable] | None = None
    dedupe_window_s: float = 600.0


@dataclass
class TableCounters:
    folded: int = 0
    duplicates: int = 0
    unreadable: int = 0
    read_errors: int = 0


class ReplicatedTable(Service, Generic[E, K, V]):
    """A dict every worker builds from all of `topic`, readable without awaiting."""

    def __init__(
        self,
        *,
        name: str,
        topic: str,
        fold: TableFold[E, K, V],
        consumer_options: dict[str, Any],
        fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS,
        max_records: int = FETCH_MAX_RECORDS,
        **kwargs: Any,
    ) -> None:
        self.table_name = name
        self.topic = topic
        self.fold = fold
        self.consumer_options = consumer_options
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.max_records = max_records
        self.counters = TableCounters()
        self._data: dict[K, V] = {}
        self._seen = RecentKeys(fold.dedupe_window_s, max_keys=DEDUPE_MAX_KEYS)
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        #: per partition, the next offset to read, as of the last fetch round
        self._positions: dict[TopicPartition, int] = {}
        self._caught_up = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        #: time.monotonic() of the last fetch round that succeeded (0: none yet)
        self.read_at = 0.0
        super().__init__(**kwargs)

    # ------------------------------------------------------------- reading ----

    def get(self, key: K, default: V) -> V:
        return self._data.get(key, default)

    def items(self) -> ItemsView[K, V]:
        return self._data.items()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def caught_up(self) -> bool:
        """True once everything in the topic when the read started has been folded in."""
        return self._caught_up.is_set()

    async def wait_caught_up(self) -> None:
        """Return once caught up; while waiting, log where the read is now and then."""
        while True:
            try:
                await asyncio.wait_for(self._caught_up.wait(), CATCH_UP_REPORT_S)
                return
            except TimeoutError:
                log.warning("table %s still catching up: %s", self.table_name, self.progress())

    def progress(self) -> dict[str, Any]:
        """Per partition, the position read to and the last high watermark seen."""
        consumer = self._consumer
        parts: dict[str, Any] = {}
        for tp in self._partitions:
            highwater = consumer.highwater(tp) if consumer is not None else None
            position = self._positions.get(tp)
            parts[str(tp.partition)] = {"highwater": highwater, "position": position}
        return {
            "caught_up": self.caught_up,
            "read_age_s": round(time.monotonic() - self.read_at, 3) if self.read_at else None,
            "keys": len(self._data),
            "partitions": parts,
            **vars(self.counters),
        }

    # ----------------------------------------------------------- lifecycle ----

    async def on_start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **self.consumer_options,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        await self._consumer.start()
        self._reader = asyncio.create_task(self._read(), name=f"table-{self.table_name}")

    async def on_stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def _read(self) -> None:
        """Fold every record from the start of the topic, then follow it, for ever.

        A failed round is logged and retried with backoff: the table goes stale
        (`read_at` tells how stale) but the worker never stops for it."""
        consumer = self._consumer
        assert consumer is not None
        failures = 0
        while True:
            try:
                if not self._partitions:
                    await self._assign(consumer)
                batch = await consumer.getmany(
                    *self._partitions,
                    timeout_ms=self.fetch_max_wait_ms,
                    max_records=self.max_records,
                )
                for tp, messages in batch.items():
                    for message in messages:
                        self._fold_one(
                            ConsumedRecord(
                                tp.topic,
                                tp.partition,
                                message.offset,
                                message.key,
                                message.value or b"",
                            )
                        )
                for tp in self._partitions:
                    self._positions[tp] = await consumer.position(tp)
                self.read_at = time.monotonic()
                failures = 0
                if not self.caught_up and self._at_highwater(consumer):
                    self._caught_up.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # KafkaError, OSError, or worse: never stop reading
                self.counters.read_errors += 1
                delay = READ_BACKOFF.delay_s(failures)
                failures += 1
                log.warning(
                    "table %s: reading %s failed (%s: %s); retrying in %.1f s",
                    self.table_name,
                    self.topic,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            await consumer.topics()  # refreshes the metadata
            partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise _TopicMissing(f"topic {self.topic} has no partitions in the broker's metadata")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._partitions = tps

    def _fold_one(self, record: ConsumedRecord) -> None:
        fold = self.fold
        try:
            event = fold.decode(record)
            if fold.event_id is not None and self._seen.seen_before(
                fold.event_id(event), time.monotonic()
            ):
                self.counters.duplicates += 1
                return
            fold.apply(self._data, event)
        except Exception as exc:
            # Every worker reads every record, on every start: a dead letter per
            # worker per start would repeat it; the record stays in the topic.
            self.counters.unreadable += 1
            log.warning(
                "table %s: skipped record %s[%d]@%d: %s: %s",
                self.table_name,
                record.topic,
                record.partition,
                record.offset,
                type(exc).__name__,
                exc,
            )
            return
        self.counters.folded += 1

    def _at_highwater(self, consumer: AIOKafkaConsumer) -> bool:
        for tp in self._partitions:
            highwater = consumer.highwater(tp)
            position = self._positions.get(tp)
            if highwater is None or position is None or position < highwater:
                return False
        return True


class _TopicMissing(KafkaError):
    """The table's topic is not (yet) in the metadata: retried like any read failure."""

    retriable = True
