"""Tenant budgets over tumbling windows and a request's own cost cap."""

from __future__ import annotations

from streams.config import TenantBudgetConfig, TierConfig
from streams.evaluation.budget import (
    budget_exhausted,
    expected_call_price_usd,
    expected_tokens,
    request_over_budget,
    spend_key,
    tier_over_budget,
    window_start,
)

ADAPTER = {"kind": "python", "callable": "tests.streams.evaluation.sample_quality:constant_score"}
HOURLY = TenantBudgetConfig(usd=10.0, window_s=3600.0, expensive_above_usd=0.001)


def tier(name: str, **price: float) -> TierConfig:
    return TierConfig.model_validate({"name": name, "adapter": ADAPTER, "price": price})


PREMIUM = tier("premium", per_call_usd=0.01)
TOKEN_PRICED = tier("llm", per_1k_input_tokens_usd=0.002, per_1k_output_tokens_usd=0.008)
FREE = tier("local")


def test_windows_are_aligned_to_the_epoch() -> None:
    assert window_start(7199.9, 3600.0) == 3600.0
    assert window_start(7200.0, 3600.0) == 7200.0
    assert window_start(59.0, 60.0) == 0.0
    assert spend_key("acme", 7300.5, HOURLY) == "acme@7200"


def test_budget_exhausted_at_the_limit() -> None:
    assert not budget_exhausted(9.99, HOURLY)
    assert budget_exhausted(10.0, HOURLY)


def test_expensive_tiers_are_skipped_once_the_budget_is_spent() -> None:
    assert tier_over_budget(PREMIUM, HOURLY, spent_usd=9.0) is None
    assert tier_over_budget(PREMIUM, None, spent_usd=1e9) is None
    reason = tier_over_budget(PREMIUM, HOURLY, spent_usd=10.5)
    assert reason == (
        "tenant budget spent: 10.5 of 10 USD per 3600 s; "
        "tier premium costs ~0.01 USD per call > expensive_above_usd 0.001"
    )
    assert tier_over_budget(FREE, HOURLY, spent_usd=10.5) is None  # cheap tiers still serve


def test_token_priced_tiers_use_the_expected_tokens() -> None:
    assert tier_over_budget(TOKEN_PRICED, HOURLY, spent_usd=11.0) is None  # looks free
    assert tier_over_budget(
        TOKEN_PRICED, HOURLY, spent_usd=11.0, expected_tokens_in=500, expected_tokens_out=100
    )  # 0.001 + 0.0008 > 0.001
    assert expected_call_price_usd(TOKEN_PRICED, 1000, 1000) == 0.01


def test_expected_tokens() -> None:
    request_input = {"prompt": "x" * 390}  # 402 characters of JSON
    assert expected_tokens(request_input, {"max_tokens": 256}) == (101, 256)
    assert expected_tokens(request_input, {"max_completion_tokens": 64}) == (101, 64)
    assert expected_tokens(request_input, {}) == (101, 0)


def test_request_max_cost() -> None:
    assert request_over_budget(None, 100.0, PREMIUM) is None
    assert request_over_budget(0.05, 0.04, PREMIUM) is None  # exactly fits
    assert request_over_budget(0.3, 0.1, tier("t", per_call_usd=0.2)) is None  # float-safe
    assert request_over_budget(0.05, 0.045, PREMIUM) == (
        "request max_cost_usd 0.05: 0.045 spent, tier premium costs ~0.01 USD > 0.005 remaining"
    )
    assert request_over_budget(0.05, 0.09, FREE) is None  # a free tier always fits
