"""Tenant spend, all of it: the window key, this worker's ledger, the shared
table, the charges not yet published, and publishing them.

The stages see two calls (`TenantSpend`):

- `charge(tenant, usd, charged_at)`: an attempt cost money (rejected ones too);
- `spent_usd(tenant, now_s)`: the tenant's spend in its current budget window,
  the larger of this worker's own charges and the shared table.

How charges become shared: at most every second (`publish_when_due`, called
after each fetched batch) and before each offset commit (`publish`), the
worker sends one `Spend` per tenant window with the sum to `<prefix>spend`,
keyed by tenant.  Every worker reads the whole spend topic into its own
replicated table (streams/state/replicated_table.py), adding each event to
`tenant@window_start`, so each sees every tenant's total.  The table lags
by a publish and a hop, so this worker's own charges count at once through
its ledger, keyed the same way.

The spend topic has one partition: a worker sends about one event a second
per tenant window, and one partition keeps the read a single ordered stream.
It does not rotate with the other topics (docs/topic-rotation.md): budgets
need its whole window.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.codec import decode_avro
from schemas.events import Spend
from streams.config import BudgetsConfig
from streams.evaluation.budget import spend_key
from streams.kafka.consumed_record import ConsumedRecord
from streams.state.replicated_table import ReplicatedTable, TableFold

__all__ = [
    "SPEND_PUBLISH_INTERVAL_S",
    "SpendTable",
    "TenantSpend",
    "TenantSpendLedger",
    "build_spend_table",
    "spend_fold",
    "spend_window_key",
]

#: the table's name in logs and pages
SPEND_TABLE = "tenant_spend"
#: charges wait at most this long before their spend event is sent.  One event
#: per fetched batch made small batches (moderate load) cost a spend event each;
#: at 100 ms the never-deleted spend topic grew by ~9 batches/s, and on the
#: embedded broker a reader of 30,000 stored batches fed 9 records/s cost it 37%
#: of a core (4% at 1/s): the p99 creep of the 60-minute soak.  A second is
#: also the commit interval, which publishes anyway.
SPEND_PUBLISH_INTERVAL_S = 1.0

SpendTable = ReplicatedTable[Spend, str, float]
#: puts one spend event on the spend topic (into the producer's batch)
SendSpend = Callable[[Spend], Awaitable[None]]


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


@dataclass
class PendingSpend:
    """Charges to one tenant window not yet on the spend topic."""

    tenant: str
    usd: float
    attempts: int
    charged_at: datetime


class TenantSpend:
    """What the stages ask about spend and tell it; see the module docstring."""

    def __init__(
        self,
        budgets: BudgetsConfig,
        send: SendSpend,
        table: SpendTable | None,
        *,
        instance_id: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budgets = budgets
        self.table = table
        self.ledger = TenantSpendLedger(budgets)
        self._send = send
        self._monotonic = monotonic
        #: spend ids are `<instance>-<n>`: unique across workers and restarts
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self._sequence = itertools.count()
        #: charges not yet on the spend topic, by spend window key
        self._pending: dict[str, PendingSpend] = {}
        self._published_at = 0.0

    def spent_usd(self, tenant: str, now_s: float) -> float:
        """The tenant's spend in the window holding `now_s`: this worker's own
        charges count at once, every worker's arrive through the table."""
        own = self.ledger.spent(tenant, now_s)
        if self.table is None:
            return own
        return max(own, self.table.get(spend_window_key(tenant, now_s, self.budgets), 0.0))

    def charge(self, tenant: str, usd: float, charged_at: datetime) -> None:
        """Count a charge now; it reaches the shared table with the next publish."""
        if usd <= 0:
            return
        self.ledger.add(tenant, usd, charged_at.timestamp())
        key = spend_window_key(tenant, charged_at.timestamp(), self.budgets)
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = PendingSpend(tenant, usd, 1, charged_at)
        else:
            pending.usd += usd
            pending.attempts += 1
            pending.charged_at = max(pending.charged_at, charged_at)

    @property
    def unpublished_usd(self) -> float:
        return sum(pending.usd for pending in self._pending.values())

    async def publish_when_due(self) -> None:
        """After each fetched batch: publish when the last publish is
        `SPEND_PUBLISH_INTERVAL_S` old, so other workers see a charge within
        about that (plus the spend topic's hop) whatever the batch sizes; after
        the last batch of a burst, the next commit publishes what is left."""
        if self._pending and self._monotonic() - self._published_at >= SPEND_PUBLISH_INTERVAL_S:
            await self.publish()

    async def publish(self) -> None:
        """One spend event per tenant window for everything charged since the last
        call.  The stage consumer also calls this before each commit, so a
        committed charge is always in the producer.  Summing charges keeps the
        spend topic small."""
        self._published_at = self._monotonic()
        pending, self._pending = self._pending, {}
        for charges in pending.values():
            await self._send(
                Spend(
                    spend_id=f"{self.instance_id}-{next(self._sequence)}",
                    tenant=charges.tenant,
                    usd=charges.usd,
                    attempts=charges.attempts,
                    charged_at=charges.charged_at,
                )
            )

    def own_snapshot(self, now_s: float) -> dict[str, float]:
        """tenant -> USD this worker charged in each tenant's current window."""
        return self.ledger.snapshot(now_s)

    def table_snapshot(self) -> dict[str, float]:
        """`tenant@window_start` -> USD, every worker's charges as read so far."""
        return dict(self.table.items()) if self.table is not None else {}


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
