"""TenantSpend: the stages' spend interface, its publishing, and two workers sharing it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from schemas.codec import encode_avro
from schemas.events import Spend
from streams.config import BudgetsConfig, TenantBudgetConfig
from streams.ops.broker import EmbeddedBroker
from streams.state.tenant_spend import (
    SPEND_PUBLISH_INTERVAL_S,
    SpendTable,
    TenantSpend,
    build_spend_table,
)
from topics.catalog import TopicSpec
from topics.declare import declare_topics

BUDGETS = BudgetsConfig(tenants={"acme": TenantBudgetConfig(usd=1.0, window_s=60)})
#: 12:00:00 and 12:00:30 share acme's 60 s window; 12:01:05 is the next one
NOON = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
HALF_PAST = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
NEXT_MINUTE = datetime(2026, 1, 1, 12, 1, 5, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spend_with(sent: list[Spend], clock: Clock | None = None) -> TenantSpend:
    async def send(spend: Spend) -> None:
        sent.append(spend)

    return TenantSpend(BUDGETS, send, None, instance_id="w1", monotonic=clock or Clock())


def test_charges_add_up_per_tenant_window() -> None:
    spend = spend_with([])
    spend.charge("acme", 0.25, NOON)
    spend.charge("acme", 0.5, HALF_PAST)
    spend.charge("acme", 0.125, NEXT_MINUTE)
    spend.charge("other", 0.5, NOON)
    assert spend.spent_usd("acme", HALF_PAST.timestamp()) == 0.75
    assert spend.spent_usd("acme", NEXT_MINUTE.timestamp()) == 0.125
    # A tenant without a budget is counted in hourly windows.
    assert spend.spent_usd("other", NEXT_MINUTE.timestamp()) == 0.5


@pytest.mark.asyncio(loop_scope="session")
async def test_one_spend_event_per_window_and_not_more_often_than_the_interval() -> None:
    sent: list[Spend] = []
    clock = Clock()
    spend = spend_with(sent, clock)
    spend.charge("acme", 0.25, NOON)
    await spend.publish_when_due()  # the first publish is due at once
    assert [(s.usd, s.attempts) for s in sent] == [(0.25, 1)]

    spend.charge("acme", 0.25, NOON)
    spend.charge("acme", 0.5, HALF_PAST)
    spend.charge("acme", 0.125, NEXT_MINUTE)
    published_at = clock.now
    clock.now = published_at + SPEND_PUBLISH_INTERVAL_S / 2
    await spend.publish_when_due()
    assert len(sent) == 1 and spend.unpublished_usd == 0.875  # not yet due

    clock.now = published_at + SPEND_PUBLISH_INTERVAL_S
    await spend.publish_when_due()
    by_window = sorted((s.usd, s.attempts, s.charged_at) for s in sent[1:])
    assert by_window == [(0.125, 1, NEXT_MINUTE), (0.75, 2, HALF_PAST)]
    assert len({s.spend_id for s in sent}) == 3 and spend.unpublished_usd == 0

    await spend.publish()  # before a commit: nothing pending, nothing sent
    assert len(sent) == 3


@pytest_asyncio.fixture(loop_scope="session")
async def spend_topic(broker: EmbeddedBroker) -> str:
    name = f"spend-{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(name, 1, 1, 3_600_000, "spend")
    await declare_topics([spec], {"bootstrap_servers": broker.bootstrap_servers})
    return name


@pytest_asyncio.fixture(loop_scope="session")
async def producer(broker: EmbeddedBroker) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)
    await producer.start()
    yield producer
    await producer.stop()


@pytest.mark.asyncio(loop_scope="session")
async def test_two_workers_see_each_others_charges_once(
    broker: EmbeddedBroker, spend_topic: str, producer: AIOKafkaProducer
) -> None:
    async def send(spend: Spend) -> None:
        await producer.send(spend_topic, encode_avro(spend), key=spend.tenant.encode())

    tables: list[SpendTable] = []
    workers: list[TenantSpend] = []
    for name in ("one", "two"):
        table = build_spend_table(
            spend_topic, BUDGETS, 600.0, {"bootstrap_servers": broker.bootstrap_servers}
        )
        await table.start()
        await asyncio.wait_for(table.wait_caught_up(), 20)
        tables.append(table)
        workers.append(TenantSpend(BUDGETS, send, table, instance_id=name))
    one, two = workers
    now_s = datetime.now(UTC).timestamp()
    try:
        one.charge("acme", 0.25, datetime.now(UTC))
        one.charge("acme", 0.25, datetime.now(UTC))
        two.charge("acme", 0.125, datetime.now(UTC))
        assert one.spent_usd("acme", now_s) == 0.5  # its own charges count at once
        await one.publish()
        await two.publish()
        # A redelivered copy of a spend event (same spend_id) is counted once.
        again = Spend(
            spend_id="one-0", tenant="acme", usd=0.5, attempts=2, charged_at=datetime.now(UTC)
        )
        await send(again)
        await producer.flush()
        async with asyncio.timeout(20):
            while not (
                one.spent_usd("acme", now_s) == two.spent_usd("acme", now_s) == 0.625
                and tables[1].counters.duplicates == 1
            ):
                await asyncio.sleep(0.05)
    finally:
        for table in tables:
            await table.stop()
