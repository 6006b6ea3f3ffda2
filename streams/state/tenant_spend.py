"""Tenant spend shared by every worker: a Faust GlobalTable fed by the spend topic.

Evaluators charge every attempt with a cost (rejected ones included); at most
every 100 ms (`Pipeline.publish_spend_when_due`, and before each commit) the
worker publishes one `Spend` per tenant window with the sum to `<prefix>spend`,
keyed by tenant.  The `count_spend` agent adds it to the table under
`tenant@window_start`; the table's changelog is read by every worker, so each
sees every tenant's total.  Totals lag by a hop or two, so a
worker also counts its own charges at once (`TenantSpendLedger`, keyed the
same way) and budget checks use the larger of the two.

Faust's GlobalTable needs one changelog partition (and a recovery buffer of
1) to recover reliably with several workers; the spend topic has one
partition to match, which is plenty: a worker sends about ten events a second
per tenant window.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import faust

from schemas.codec import decode_avro
from schemas.errors import EventDecodeError
from schemas.events import Spend
from streams.config import BudgetsConfig
from streams.evaluation.budget import spend_key
from streams.kafka.consumed_record import ConsumedRecord
from streams.state.recent_keys import RecentKeys
from topics.catalog import SPEND_TABLE


def spend_window_key(tenant: str, at_s: float, budgets: BudgetsConfig) -> str:
    return spend_key(tenant, at_s, budgets.for_tenant(tenant))


class TenantSpendLedger:
    """This worker's own charges, counted the moment they happen (the table lags)."""

    def __init__(self, budgets: BudgetsConfig) -> None:
        self.budgets = budgets
        self._spent: dict[str, float] = defaultdict(float)

    def add(self, tenant: str, usd: float, at_s: float) -> None:
        if usd > 0:
            self._spent[spend_window_key(tenant, at_s, self.budgets)] += usd

    def spent(self, tenant: str, now_s: float) -> float:
        return self._spent.get(spend_window_key(tenant, now_s, self.budgets), 0.0)

    def snapshot(self, now_s: float) -> dict[str, float]:
        """tenant -> USD in each tenant's current window."""
        tenants = {key.rpartition("@")[0] for key in self._spent}
        return {tenant: self.spent(tenant, now_s) for tenant in tenants}


def build_spend_table(app: faust.App) -> Any:
    return app.GlobalTable(
        SPEND_TABLE,
        default=float,
        key_type=str,
        value_type=float,
        partitions=1,
        recovery_buffer_size=1,
    )


async def count_spend(
    table: Any, budgets: BudgetsConfig, stream: Any, dead_letter: Any, seen: RecentKeys
) -> None:
    """Agent body: add each spend event to its tenant's window total, once."""
    async for event in stream.events():
        message = event.message
        try:
            spend = decode_avro(Spend, message.value)
        except EventDecodeError as exc:
            record = ConsumedRecord(
                message.topic, message.partition, message.offset, message.key, message.value or b""
            )
            await dead_letter(record, exc)
            continue
        if seen.seen_before(spend.spend_id, time.monotonic()):
            continue  # a redelivered spend event must not be charged twice
        key = spend_window_key(spend.tenant, spend.charged_at.timestamp(), budgets)
        table[key] = table[key] + spend.usd


def table_spend(table: Any, tenant: str, budgets: BudgetsConfig) -> float:
    value = table.get(spend_window_key(tenant, time.time(), budgets))
    return float(value) if value is not None else 0.0
