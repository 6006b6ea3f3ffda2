"""What the stages share inside one worker, read-only: config, topics, the
publisher, adapters, circuits, safety, tenant spend, dedupe, the sink.

Stages read these and call their methods; nothing here is reassigned after
start-up (with topic rotation, `topics` follows the current generation:
`TopicNames`, streams/kafka/topics.py).  Tenant spend (charges, the shared table, publishing) is
`TenantSpend` in streams/state/tenant_spend.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel

from analytics.sink import ClickHouseSink, open_sink
from schemas.codec import decode_avro
from schemas.errors import EventDecodeError
from streams.adapters.base import ModelAdapter
from streams.config import FallbackConfig
from streams.evaluation.circuit import CircuitBreaker
from streams.evaluation.decision import Outcome
from streams.evaluation.safety import SafetyScorer
from streams.kafka.consumed_record import ConsumedRecord
from streams.kafka.publisher import Publisher
from streams.observability import tracing
from streams.observability.metrics import PrometheusMetrics
from streams.state.recent_keys import RecentKeys
from streams.state.tenant_spend import TenantSpend
from topics.catalog import TopicCatalog

E = TypeVar("E", bound=BaseModel)


@dataclass
class PipelineMetrics:
    routed: int = 0
    invalid: int = 0
    duplicates: int = 0
    sunk_verdicts: int = 0
    sunk_responses: int = 0


@dataclass
class _Opened:
    """What `Pipeline.open` creates at start-up (the sink needs the event loop)."""

    sink: ClickHouseSink | None = None


@dataclass(frozen=True)
class Pipeline:
    config: FallbackConfig
    publisher: Publisher
    adapters: dict[str, ModelAdapter]
    circuits: dict[str, CircuitBreaker]
    safety: SafetyScorer
    spend: TenantSpend
    seen_requests: RecentKeys
    seen_attempts: RecentKeys
    metrics: PipelineMetrics = field(default_factory=PipelineMetrics)
    rng: random.Random = field(default_factory=random.Random)
    _opened: _Opened = field(default_factory=_Opened)

    @property
    def topics(self) -> TopicCatalog:
        """The topics to publish to now; stages subscribe by `publisher.names.base`."""
        return self.publisher.topics

    @property
    def sink(self) -> ClickHouseSink | None:
        """The analytics sink, once `open` ran (None with analytics off)."""
        return self._opened.sink

    @property
    def prometheus(self) -> PrometheusMetrics:
        """This worker's metrics (the publisher holds them: every output passes there)."""
        return self.publisher.metrics

    async def open(self) -> None:
        """Warm models (train/load) and open analytics before any event is consumed."""
        if self.config.analytics.enabled:
            self._opened.sink = await open_sink(self.config.analytics)
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

    async def publish_outcome(self, outcome: Outcome, reply_to: str | None) -> None:
        """Verdicts, then the forward or the final response; all in the producer on return.

        Awaited one by one: each call only appends to the producer's batch, so
        gathering them would add a task per record on the hot path for nothing.
        """
        for verdict in outcome.verdicts:
            await self.publisher.enqueue_avro(self.topics.verdicts, verdict.request_id, verdict)
            self.prometheus.judged(verdict)
            tracing.verdict_published(verdict)
        if outcome.forward is not None:
            forward = outcome.forward
            topic = self.topics.tier(forward.tier)
            await self.publisher.enqueue_avro(topic, forward.request.request_id, forward)
        if outcome.response is not None:
            await self.publisher.respond(outcome.response, reply_to)
