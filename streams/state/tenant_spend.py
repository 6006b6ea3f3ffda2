"""Tenant spend shared by every worker: a replicated table fed by the spend topic.

Evaluators charge every attempt with a cost (rejected ones included); at most
every 100 ms (`Pipeline.publish_spend_when_due`, and before each commit) the
worker publishes one `Spend` per tenant window with the sum to `<prefix>spend`,
keyed by tenant.  Every worker reads the whole spend topic into its own
`ReplicatedTable` (streams/state/replicated_table.py), adding each event to
`tenant@window_start`, so each sees every tenant's total.  Totals lag by a
hop, so a worker also counts its own charges at once (`TenantSpendLedger`,
keyed the same way) and budget checks use the larger of the two.

The spend topic has one partition: a worker sends about ten events a second
per tenant window, and one partition keeps the read a single ordered stream.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from schemas.codec import decode_avro
from schemas.events import Spend
from streams.config import BudgetsConfig
from streams.evaluation.budget import spend_key
from streams.kafka.consumed_record import ConsumedRecord
from streams.state.replicated_table import ReplicatedTable, TableFold

#: the table's name in logs and pages
SPEND_TABLE = "tenant_spend"

SpendTable = ReplicatedTable[Spend, str, float]


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


def spend_fold(budgets: BudgetsConfig, dedupe_window_s: float) -> TableFold[Spend, str, float]:
    """Each spend event adds its USD to its tenant window, once per `spend_id`."""

    def decode(record: ConsumedRecord) -> Spend:
        return decode_avro(Spend, record.value)

    def apply(table: dict[str, float], spend: Spend) -> None:
        key = spend_window_key(spend.tenant, spend.charged_at.timestamp(), budgets)
        table[key] = table.get(key, 0.0) + spend.usd

    return TableFold(
        decode=decode,
        apply=apply,
        event_id=lambda spend: spend.spend_id,
        dedupe_window_s=dedupe_window_s,
    )


def build_spend_table(
    topic: str, budgets: BudgetsConfig, dedupe_window_s: float, consumer_options: dict[str, Any]
) -> SpendTable:
    return ReplicatedTable(
        name=SPEND_TABLE,
        topic=topic,
        fold=spend_fold(budgets, dedupe_window_s),
        consumer_options=consumer_options,
    )


def table_spend(table: SpendTable, tenant: str, budgets: BudgetsConfig) -> float:
    return table.get(spend_window_key(tenant, time.time(), budgets), 0.0)
