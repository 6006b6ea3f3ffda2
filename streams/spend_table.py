"""Tenant spend shared by every worker: a Faust GlobalTable fed by the spend topic.

Evaluators publish one `Spend` per charged attempt (rejected ones included) to
`<prefix>spend`, keyed by tenant.  The `count_spend` agent adds it to the
table under `tenant@window_start`; the table's changelog is read by every
worker, so each sees every tenant's total.  Totals lag by a hop or two, so a
worker also counts its own charges at once (`TenantSpendLedger`) and budget
checks use the larger of the two.

Faust's GlobalTable needs one changelog partition (and a recovery buffer of
1) to recover reliably with several workers; the spend topic has one
partition to match, which is plenty: only charged attempts pass through it.
"""

from __future__ import annotations

import time
from typing import Any

import faust

from schemas.codec import decode_avro
from schemas.errors import EventDecodeError
from schemas.events import Spend
from streams.budget import window_start
from streams.config import BudgetsConfig
from streams.dedupe import RecentKeys
from topics.catalog import SPEND_TABLE

DEFAULT_WINDOW_S = 3600.0


def spend_window_key(tenant: str, at_s: float, budgets: BudgetsConfig) -> str:
    budget = budgets.for_tenant(tenant)
    window_s = budget.window_s if budget is not None else DEFAULT_WINDOW_S
    return f"{tenant}@{int(window_start(at_s, window_s))}"


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
    """Agent body: add each charged attempt to its tenant's window total, once."""
    async for event in stream.events():
        try:
            spend = decode_avro(Spend, event.message.value)
        except EventDecodeError as exc:
            await dead_letter(event, exc)
            continue
        if seen.seen_before((spend.request_id, spend.attempt), time.monotonic()):
            continue  # a redelivered spend event must not be charged twice
        key = spend_window_key(spend.tenant, spend.charged_at.timestamp(), budgets)
        table[key] = table[key] + spend.usd


def table_spend(table: Any, tenant: str, budgets: BudgetsConfig) -> float:
    value = table.get(spend_window_key(tenant, time.time(), budgets))
    return float(value) if value is not None else 0.0
