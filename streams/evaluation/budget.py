"""Cost controls: tenant budgets over tumbling time windows, and a request's own cap.

Pure arithmetic; the running totals live elsewhere (a Faust table keyed by
`spend_key`, so every worker sees the same totals). Spend counts what was
really charged, rejected attempts included; these functions only compare.

Prices before the call are estimates: a tier's expected price is its
`price.per_call_usd` plus its token prices applied to caller-supplied expected
token counts (`expected_tokens` offers a rough estimate: input JSON length / 4,
output = the request's `max_tokens` if given, else 0). With no token estimate,
a tier priced only per token looks free, so pass one for LLM tiers.

Budget exhaustion (cost fallback): once a tenant has spent its budget for the
current window, tiers whose expected price is above `expensive_above_usd` are
skipped and cheaper ones serve. The default threshold 0.0 leaves only free
tiers (local models) once the money is gone.
"""

from __future__ import annotations

import json
import math
from typing import Any

from streams.config import TenantBudgetConfig, TierConfig

__all__ = [
    "budget_exhausted",
    "expected_call_price_usd",
    "expected_tokens",
    "request_over_budget",
    "spend_key",
    "tier_over_budget",
    "window_start",
]

# The usual rule of thumb for English text and BPE tokenizers.
_CHARS_PER_TOKEN = 4
# Float subtraction must not make an exact fit look over budget (0.3 - 0.1 < 0.2).
_USD_TOLERANCE = 1e-9
DEFAULT_WINDOW_S = 3600.0
_OUTPUT_TOKEN_PARAMS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def window_start(now_s: float, window_s: float) -> float:
    """Start of the tumbling window holding `now_s`; windows are aligned to the epoch,
    so every worker puts the same instant in the same window."""
    return math.floor(now_s / window_s) * window_s


def spend_key(tenant: str, now_s: float, budget: TenantBudgetConfig | None) -> str:
    """Key of a tenant's spend in the window holding `now_s`: `tenant@start`.  Tenants
    without a budget are still counted, in hourly windows, for the metrics."""
    window_s = budget.window_s if budget is not None else DEFAULT_WINDOW_S
    return f"{tenant}@{int(window_start(now_s, window_s))}"


def budget_exhausted(spent_usd: float, budget: TenantBudgetConfig) -> bool:
    return spent_usd >= budget.usd


def expected_tokens(request_input: dict[str, Any], params: dict[str, Any]) -> tuple[int, int]:
    """(input tokens, output tokens) a call is expected to use; a rough, cheap estimate."""
    input_chars = len(json.dumps(request_input, ensure_ascii=False, default=str))
    tokens_in = math.ceil(input_chars / _CHARS_PER_TOKEN)
    tokens_out = 0
    for name in _OUTPUT_TOKEN_PARAMS:
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            tokens_out = value
            break
    return tokens_in, tokens_out


def expected_call_price_usd(
    tier: TierConfig, expected_tokens_in: int = 0, expected_tokens_out: int = 0
) -> float:
    return tier.price.cost(expected_tokens_in, expected_tokens_out)


def tier_over_budget(
    tier: TierConfig,
    budget: TenantBudgetConfig | None,
    spent_usd: float,
    expected_tokens_in: int = 0,
    expected_tokens_out: int = 0,
) -> str | None:
    """Why the tier is skipped for a tenant that spent its budget, or None when it may serve."""
    if budget is None or not budget_exhausted(spent_usd, budget):
        return None
    price = expected_call_price_usd(tier, expected_tokens_in, expected_tokens_out)
    if price <= budget.expensive_above_usd:
        return None
    return (
        f"tenant budget spent: {spent_usd:.6g} of {budget.usd:.6g} USD per {budget.window_s:g} s; "
        f"tier {tier.name} costs ~{price:.6g} USD per call > "
        f"expensive_above_usd {budget.expensive_above_usd:.6g}"
    )


def request_over_budget(
    max_cost_usd: float | None,
    spent_usd: float,
    tier: TierConfig,
    expected_tokens_in: int = 0,
    expected_tokens_out: int = 0,
) -> str | None:
    """Why the tier would break the request's own `max_cost_usd`, or None when it fits.

    A free tier always fits, even when earlier attempts overshot the cap.
    """
    if max_cost_usd is None:
        return None
    price = expected_call_price_usd(tier, expected_tokens_in, expected_tokens_out)
    remaining = max(max_cost_usd - spent_usd, 0.0)
    if price <= remaining + _USD_TOLERANCE:
        return None
    return (
        f"request max_cost_usd {max_cost_usd:.6g}: {spent_usd:.6g} spent, "
        f"tier {tier.name} costs ~{price:.6g} USD > {remaining:.6g} remaining"
    )
