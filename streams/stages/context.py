"""What the stages share inside one worker: config, topics, adapters, spend, sink."""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel

from analytics.sink import ClickHouseSink, open_sink
from schemas.codec import decode_avro
from schemas.errors import EventDecodeError
from schemas.events import Spend
from streams.adapters.base import ModelAdapter
from streams.config import FallbackConfig
from streams.evaluation.circuit import CircuitBreaker
from streams.evaluation.decision import DecisionContext, Outcome
from streams.evaluation.safety import SafetyScorer
from streams.kafka.consumed_record import ConsumedRecord
from streams.kafka.publisher import Publisher
from streams.state.recent_keys import RecentKeys
from streams.state.tenant_spend import (
    SpendTable,
    TenantSpendLedger,
    spend_window_key,
    table_spend,
)
from topics.catalog import TopicCatalog

E = TypeVar("E", bound=BaseModel)

#: charges wait at most this long before their spend event is sent; one event per
#: fetched batch made small batches (moderate load) cost a spend event each
SPEND_PUBLISH_INTERVAL_S = 0.1


@dataclass
class PipelineMetrics:
    routed: int = 0
    invalid: int = 0
    duplicates: int = 0
    sunk_verdicts: int = 0
    sunk_responses: int = 0


@dataclass
class PendingSpend:
    """Charges to one tenant window not yet on the spend topic."""

    tenant: str
    usd: float
    attempts: int
    charged_at: datetime


@dataclass
class Pipeline:
    config: FallbackConfig
    topics: TopicCatalog
    publisher: Publisher
    adapters: dict[str, ModelAdapter]
    circuits: dict[str, CircuitBreaker]
    safety: SafetyScorer
    spend: TenantSpendLedger
    seen_requests: RecentKeys
    seen_attempts: RecentKeys
    sink: ClickHouseSink | None = None
    spend_table: SpendTable | None = None
    metrics: PipelineMetrics = field(default_factory=PipelineMetrics)
    rng: random.Random = field(default_factory=random.Random)
    #: charges not yet on the spend topic, by spend window key
    pending_spend: dict[str, PendingSpend] = field(default_factory=dict)
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    spend_sequence: Iterator[int] = field(default_factory=itertools.count)
    spend_published_at: float = 0.0  # time.monotonic()

    async def open(self) -> None:
        """Warm models (train/load) and open analytics before any event is consumed."""
        if self.config.analytics.enabled:
            self.sink = await open_sink(self.config.analytics)
        for adapter in self.adapters.values():
            warm_up = getattr(adapter, "warm_up", None)
            if warm_up is not None:
                await warm_up()

    async def close(self) -> None:
        for adapter in self.adapters.values():
            await adapter.aclose()
        if self.sink is not None:
            await self.sink.close()

    async def decode_or_dead_letter(
        self, record: ConsumedRecord, model: type[E], stage: str
    ) -> E | None:
        """An internal (Avro) event, or None after dead-lettering it with the reason."""
        try:
            return decode_avro(model, record.value)
        except EventDecodeError as exc:
            await self.dead_letter_undecodable(record, exc, stage)
            return None

    async def dead_letter_undecodable(
        self, record: ConsumedRecord, error: EventDecodeError, stage: str
    ) -> None:
        """A record that does not decode goes to the dead-letter topic with the reason."""
        await self.publisher.dead_letter(
            record=record,
            reason=error.reason,
            error_type=type(error).__name__,
            stage=stage,
            request_id=error.request_id,
        )

    def tenant_spend_usd(self, tenant: str) -> float:
        """This worker's own charges count at once; every worker's arrive via the table."""
        local = self.spend.spent(tenant, time.time())
        if self.spend_table is None:
            return local
        return max(local, table_spend(self.spend_table, tenant, self.config.budgets))

    def record_spend(self, tenant: str, usd: float, charged_at: datetime) -> None:
        """Count a charge now; it reaches the shared table with `publish_spend`."""
        self.spend.add(tenant, usd, charged_at.timestamp())
        key = spend_window_key(tenant, charged_at.timestamp(), self.config.budgets)
        pending = self.pending_spend.get(key)
        if pending is None:
            self.pending_spend[key] = PendingSpend(tenant, usd, 1, charged_at)
        else:
            pending.usd += usd
            pending.attempts += 1
            pending.charged_at = max(pending.charged_at, charged_at)

    async def publish_spend_when_due(self) -> None:
        """After each fetched batch: publish when the last publish is
        `SPEND_PUBLISH_INTERVAL_S` old, so other workers see a charge within
        about that (plus the spend topic's hop) whatever the batch sizes; after
        the last batch of a burst, the next commit publishes what is left."""
        if self.pending_spend and time.monotonic() - self.spend_published_at >= (
            SPEND_PUBLISH_INTERVAL_S
        ):
            await self.publish_spend()

    async def publish_spend(self) -> None:
        """One spend event per tenant window for everything charged since the last
        call.  The stage consumer also calls this before each commit, so a
        committed charge is always in the producer.  Summing charges keeps the
        spend topic and the table's changelog small."""
        self.spend_published_at = time.monotonic()
        pending, self.pending_spend = self.pending_spend, {}
        for charges in pending.values():
            spend = Spend(
                spend_id=f"{self.instance_id}-{next(self.spend_sequence)}",
                tenant=charges.tenant,
                usd=charges.usd,
                attempts=charges.attempts,
                charged_at=charges.charged_at,
            )
            await self.publisher.enqueue_avro(self.topics.spend, spend.tenant, spend)

    def decision_context(self, now: datetime) -> DecisionContext:
        return DecisionContext(
            config=self.config,
            circuits=self.circuits,
            safety=self.safety,
            tenant_spend_usd=self.tenant_spend_usd,
            now=now,
            rng=self.rng,
        )

    async def publish_outcome(self, outcome: Outcome) -> None:
        """Verdicts, then the forward or the final response; all in the producer on return.

        Awaited one by one: each call only appends to the producer's batch, so
        gathering them would add a task per record on the hot path for nothing.
        """
        for verdict in outcome.verdicts:
            await self.publisher.enqueue_avro(self.topics.verdicts, verdict.request_id, verdict)
        if outcome.forward is not None:
            forward = outcome.forward
            topic = self.topics.tier(forward.tier)
            await self.publisher.enqueue_avro(topic, forward.request.request_id, forward)
        if outcome.response is not None:
            await self.publisher.respond(outcome.response)
