"""Per-tenant spend in tumbling windows, as seen by this worker.

Fed by the evaluators with every charged attempt (accepted or not).
"""

from __future__ import annotations

from collections import defaultdict

from streams.config import BudgetsConfig


class TenantSpendLedger:
    def __init__(self, budgets: BudgetsConfig) -> None:
        self.budgets = budgets
        self._spent: dict[tuple[str, int], float] = defaultdict(float)

    def _window(self, tenant: str, now_s: float) -> tuple[str, int]:
        budget = self.budgets.for_tenant(tenant)
        window_s = budget.window_s if budget is not None else 3600.0
        return tenant, int(now_s // window_s)

    def add(self, tenant: str, usd: float, now_s: float) -> None:
        if usd > 0:
            self._spent[self._window(tenant, now_s)] += usd

    def spent(self, tenant: str, now_s: float) -> float:
        return self._spent.get(self._window(tenant, now_s), 0.0)

    def snapshot(self, now_s: float) -> dict[str, float]:
        return {t: v for (t, w), v in self._spent.items() if self._window(t, now_s)[1] == w}
