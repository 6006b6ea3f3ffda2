"""Topic rotation in the worker: the embedded broker's retention.

topics/generations.py says why and how topics are named; docs/topic-rotation.md
has the measurements.  Every worker keeps the same schedule from the clock, so
no worker leads and none needs to be elected.  In each period, for generation g:

- at `PREPARE_AT` of the period, `prepare(g + 1)`:
  1. create generation g+1's topics (idempotent: the first worker creates);
  2. read generations g and g+1 and every older one still there: the stage
     consumer reassigns itself, no rebalance;
  3. beside the schedule (the switch does not wait for it), find the older
     ones that are read out (`read_out`); the next prepare stops reading
     them, and then deletes them (asking for a deleted topic's metadata makes
     Tansu create it again);
- at the period's end, `switch_to(g + 1)`: producers write to the new topics.

A generation is deleted at the earliest `PREPARE_AT` of the second period
after it closed.  Nothing unread is ever deleted: a generation that is not read out
(a worker down, a backlog) stays, and is read, until it is.

The plain requests and responses topics are read all along: a caller that
knows nothing of generations produces requests there and reads its responses
there (`TopicNames.reply_topic`).  They are never deleted, so only such
callers' own traffic accumulates in the broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from mode import Service

from streams.kafka.publisher import Publisher
from streams.kafka.stage_consumer import StageConsumer
from streams.kafka.topics import TopicNames
from topics.declare import declare_topics
from topics.generations import (
    PREPARE_AT,
    catalog_at,
    existing_generations,
    generation_at,
    generation_specs,
    generation_topic,
)

log = logging.getLogger(__name__)

#: how long a read-out check waits for every partition's high watermark
READ_OUT_CHECK_S = 5.0


class TopicRotation(Service):
    """Creates, switches to, and deletes the pipeline's topic generations."""

    def __init__(
        self,
        *,
        names: TopicNames,
        publisher: Publisher,
        stage_consumer: StageConsumer,
        client_options: dict[str, Any],
        group_id: str,
        **kwargs: Any,
    ) -> None:
        assert names.period_s is not None
        self.names = names
        self.publisher = publisher
        self.period_s: float = names.period_s
        self.stage_consumer = stage_consumer
        self.client_options = client_options
        self.group_id = group_id
        self.deleted = 0
        #: the older generations the last round found read out: deleted next period
        self.found_read_out: set[int] = set()
        #: the running round of deletions and read-out checks, if any
        self._round: asyncio.Future[None] | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        """Before the stage consumer starts: read what exists, and the next generation."""
        generation = generation_at(time.time(), self.period_s)
        self.names.switch_to(generation)
        await self.prepare(generation + 1)
        self.add_future(self._rotate_forever())

    async def on_stop(self) -> None:
        if self._round is not None:
            self._round.cancel()
            await asyncio.gather(self._round, return_exceptions=True)

    async def _rotate_forever(self) -> None:
        try:
            while not self.should_stop:
                generation = generation_at(time.time(), self.period_s)
                current = self.names.generation
                if current is not None and current < generation:
                    # Behind the clock (a start or a prepare that straddled a
                    # boundary, a failed switch): callers stop reading a closed
                    # generation's responses after READ_AFTER_CLOSE, so catch up now.
                    try:
                        await self.switch_to(generation)
                    except (KafkaError, OSError) as exc:
                        log.warning("topic rotation: catching up to %d: %s", generation, exc)
                prepare_at = (generation + PREPARE_AT) * self.period_s
                await asyncio.sleep(max(prepare_at - time.time(), 0.0))
                switch_at = (generation + 1) * self.period_s
                try:
                    await self.prepare(generation + 1, delete=True)
                except (KafkaError, OSError) as exc:  # the broker: next period retries
                    log.warning("topic rotation: preparing generation %d: %s", generation + 1, exc)
                await asyncio.sleep(max(switch_at - time.time(), 0.0))
                try:
                    await self.switch_to(generation + 1)
                except (KafkaError, OSError) as exc:
                    log.warning("topic rotation: switching to %d: %s", generation + 1, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a worker that stopped rotating would slow the broker
            log.critical("topic rotation failed: %r", exc)
            await self.crash(exc)

    async def prepare(self, generation: int, delete: bool = False) -> None:
        """Make and read the next generation; with `delete`, stop reading the
        generations the last round found read out, and start a round that
        deletes them and checks the others.

        The read-out checks take from a few hundred ms to seconds (each waits
        for every partition's high watermark), and the switch must not wait
        for them: callers read a closed generation's responses for only
        `READ_AFTER_CLOSE` of a period, so a late switch would answer where
        nobody reads any more.  So they run beside the schedule, and what
        they find takes effect at the next prepare: the stage consumer's
        assignment changes once per period (aiokafka's coordinator can fail
        an assertion when a manual assignment changes while it looks up the
        group coordinator)."""
        await declare_topics(generation_specs(self.names.base, {generation}), self.client_options)
        existing = await self._existing_generations()
        current = self.names.generation
        assert current is not None
        older = {g for g in existing if g < current}
        read_out_before = self.found_read_out & older if delete else set()
        self._follow({current, generation, *(older - read_out_before)})
        if delete and (self._round is None or self._round.done()):
            self._round = asyncio.ensure_future(
                self._deletion_round(read_out_before, older - read_out_before)
            )

    async def _deletion_round(self, deletable: set[int], to_check: set[int]) -> None:
        """Delete `deletable` (no longer read), then find which of `to_check` are read out."""
        try:
            # Deleted once no longer read: a consumer asking for a topic's
            # metadata makes Tansu create it again.
            for old in sorted(deletable):
                await self._delete(old)
            found = set()
            for old in sorted(to_check):
                # What the group reads (the sinks' topics only with analytics on);
                # responses nobody here reads go with their generation.
                topics = [generation_topic(topic, old) for topic in self.stage_consumer.stages]
                if await read_out(topics, self.client_options, self.group_id):
                    found.add(old)
            self.found_read_out = found
        except (KafkaError, OSError) as exc:  # the broker: the next round retries
            log.warning("topic rotation: read-out generations: %s", exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a worker that stopped rotating would slow the broker
            log.critical("topic rotation failed: %r", exc)
            await self.crash(exc)

    def _follow(self, generations: set[int]) -> None:
        """Read these generations, and the plain requests and responses: callers
        that know nothing of generations write requests there and are answered
        there.  (Only callers write plain names: nothing else there to read.)"""
        stage_topics = self.stage_consumer.stages
        base = self.names.base
        public = [t for t in stage_topics if t in (base.requests, base.responses)]
        self.stage_consumer.follow(
            [*public, *(generation_topic(t, g) for t in stage_topics for g in sorted(generations))]
        )

    async def switch_to(self, generation: int) -> None:
        """Producers move on once the generation's topics exist (else they stay)."""
        if generation in await self._existing_generations():
            previous = self.names.current
            self.names.switch_to(generation)  # before any send to it: see track_topics
            # The plain names too: responses to requests produced there go there.
            self.publisher.track_topics([self.names.current, previous, self.names.base])
            log.info("topic rotation: producing to generation %d", generation)
        else:
            log.warning("topic rotation: generation %d does not exist, staying", generation)

    async def _existing_generations(self) -> set[int]:
        admin = AIOKafkaAdminClient(**self.client_options)
        await admin.start()
        try:
            return existing_generations(self.names.base, set(await admin.list_topics()))
        finally:
            await admin.close()

    async def _delete(self, generation: int) -> None:
        topics = [s.name for s in catalog_at(self.names.base, generation).specs if s.rotates]
        admin = AIOKafkaAdminClient(**self.client_options)
        await admin.start()
        try:
            await admin.delete_topics(topics)
        except KafkaError as exc:  # another worker deleted it first
            log.info("topic rotation: deleting generation %d: %s", generation, exc)
        finally:
            await admin.close()
        self.deleted += 1
        log.info("topic rotation: deleted generation %d (read out)", generation)


async def read_out(topics: list[str], client_options: dict[str, Any], group_id: str) -> bool:
    """Has `group_id` committed every partition of `topics` to its end?

    The end is the high watermark a fetch reports: Tansu's ListOffsets gives
    the base offset of the last batch plus one, short of the end of a batch
    of several records."""
    consumer = AIOKafkaConsumer(**client_options, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    admin = AIOKafkaAdminClient(**client_options)
    await admin.start()
    try:
        # The cluster `fetch_all_metadata` returns: a consumer's own metadata
        # holds only the topics it reads.
        cluster = await consumer._client.fetch_all_metadata()
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(cluster.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return not set(topics) & cluster.topics()
        offsets = await admin.list_consumer_group_offsets(group_id, partitions=tps)
        committed = {tp: max(o.offset, 0) for tp, o in offsets.items() if o is not None}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, committed.get(tp, 0))
        deadline = time.monotonic() + READ_OUT_CHECK_S
        while time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=100)
            if all(consumer.highwater(tp) is not None for tp in tps):
                break
        unread = {
            f"{tp.topic}[{tp.partition}]": (consumer.highwater(tp), committed.get(tp, 0))
            for tp in tps
            if (consumer.highwater(tp) or 0) > committed.get(tp, 0)
            or consumer.highwater(tp) is None
        }
    finally:
        await admin.close()
        await consumer.stop()
    if unread:
        log.info("topic rotation: not read out yet: %s", unread)
    return not unread
