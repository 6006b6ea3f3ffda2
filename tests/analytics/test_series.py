"""Every series against figures counted by hand from `sample_events` (see its docstring).

Minute START holds r1..r4 (verdicts at START+1..3 s, responses at START+10 s),
minute START+1 holds r6; r0 is two hours earlier, outside WINDOW_START.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from analytics.backend import ChdbBackend
from analytics.queries import cost_summary, tier_fallback_rates
from analytics.series import auto_step_s, build_series, first_tier
from tests.analytics.sample_events import START, WINDOW_START
from tests.analytics.test_queries import load_sample

NEXT = START + timedelta(minutes=1)
MINUTE = 60


@pytest.fixture
def loaded(backend: ChdbBackend) -> ChdbBackend:
    load_sample(backend)
    return backend


def test_tier_series(loaded: ChdbBackend) -> None:
    points = {
        (p.bucket, p.tier): p for p in build_series(loaded, WINDOW_START, step_s=MINUTE).tiers
    }
    assert set(points) == {
        (START, "primary"),
        (START, "backup"),
        (START, "local"),
        (NEXT, "primary"),
        (NEXT, "backup"),
    }
    primary = points[(START, "primary")]  # r1 ok, r2 timeout, r3 low_confidence, r4 skipped
    assert (primary.requests, primary.fell_through, primary.exhausted) == (4, 3, 0)
    assert primary.fallback_rate == pytest.approx(0.75)
    assert primary.calls == 3
    assert primary.p50_ms == pytest.approx(200.0)  # calls 100, 200, 1500
    assert primary.cost_usd == pytest.approx(0.02)
    assert primary.rejected_cost_usd == pytest.approx(0.01)  # r3's low-confidence answer
    backup = points[(START, "backup")]  # r2 ok, r3 unsafe -> local, r4 over_budget, last tier
    assert (backup.requests, backup.fell_through, backup.exhausted) == (3, 1, 1)
    assert backup.fallback_rate == pytest.approx(1 / 3)
    assert backup.p50_ms == pytest.approx(350.0)  # calls 300, 400
    assert points[(NEXT, "primary")].fallback_rate == 1.0  # r6 timeout
    assert points[(NEXT, "backup")].fallback_rate == 0.0
    assert points[(START, "local")].fallback_rate == 0.0


def test_series_totals_equal_the_query_library(loaded: ChdbBackend) -> None:
    series = build_series(loaded, WINDOW_START, step_s=MINUTE)
    for tier in tier_fallback_rates(loaded, WINDOW_START):
        points = [p for p in series.tiers if p.tier == tier.tier]
        assert sum(p.fell_through for p in points) == tier.fell_through
        assert sum(p.exhausted for p in points) == tier.exhausted
        assert sum(p.cost_usd for p in points) == pytest.approx(tier.cost_usd)
    cost = cost_summary(loaded, WINDOW_START)
    rejected = sum(p.rejected_cost_usd for p in series.tiers)
    assert rejected == pytest.approx(cost.rejected_attempts_cost_usd)
    assert sum(p.cost_usd for p in series.counterfactual) == pytest.approx(cost.total_cost_usd)


def test_latency_series(loaded: ChdbBackend) -> None:
    first, second = build_series(loaded, WINDOW_START, step_s=MINUTE).latency
    assert (first.bucket, first.responses) == (START, 4)  # 5, 110, 700, 1820; r5 invalid
    assert first.p50_ms == pytest.approx(405.0)
    assert first.p99_ms == pytest.approx(1786.4)
    assert (second.bucket, second.responses, second.p95_ms) == (NEXT, 1, 1760.0)


def test_fallback_type_series(loaded: ChdbBackend) -> None:
    points = build_series(loaded, WINDOW_START, step_s=MINUTE).fallback_types
    assert [(p.bucket, p.fallback_type, p.rejections) for p in points] == [
        (START, "cost", 1),  # r4 over_budget
        (START, "quality", 2),  # r3 low_confidence, unsafe
        (START, "reliability", 2),  # r2 timeout, r4 circuit_open
        (NEXT, "reliability", 1),  # r6 timeout
    ]


def test_counterfactual_series(loaded: ChdbBackend) -> None:
    series = build_series(loaded, WINDOW_START, step_s=MINUTE)
    assert series.primary_tier == "primary"
    first, second = series.counterfactual
    # Real: every attempt's cost; primary only: r1 0.01 + r3 0.01 (r2 timed out free).
    assert first.cost_usd == pytest.approx(0.024)
    assert first.primary_only_cost_usd == pytest.approx(0.02)
    assert (first.unavailable, first.primary_only_failed) == (1, 3)  # r4; r2, r3, r4
    assert second.cost_usd == pytest.approx(0.002)
    assert (second.primary_only_cost_usd, second.primary_only_failed) == (0.0, 1)  # r6


def test_filters(loaded: ChdbBackend) -> None:
    all_time = build_series(loaded, step_s=MINUTE)
    assert min(p.bucket for p in all_time.tiers) == START - timedelta(hours=2)  # r0
    backup = build_series(loaded, WINDOW_START, tier="backup", step_s=MINUTE)
    assert {p.tier for p in backup.tiers} == {"backup"}
    assert [p.responses for p in backup.latency] == [3, 1]  # r2, r3, r4 reached backup; r6
    assert backup.counterfactual == build_series(loaded, WINDOW_START, step_s=MINUTE).counterfactual
    nobody = build_series(loaded, tenant="nobody", step_s=MINUTE)
    assert (nobody.tiers, nobody.latency, nobody.counterfactual) == ([], [], [])
    assert nobody.primary_tier is None
    assert build_series(loaded, tenant="acme", step_s=MINUTE).tiers == all_time.tiers


def test_step_and_primary(loaded: ChdbBackend) -> None:
    # r1..r6 span 10:00:01 to 10:01:02: one-second buckets; with r0 two hours
    # earlier, two-minute ones (7261 s / 120 s = 61 buckets, within 90).
    assert auto_step_s(loaded, WINDOW_START) == 1
    assert auto_step_s(loaded) == 120
    assert build_series(loaded, WINDOW_START).step_s == 1
    assert auto_step_s(loaded, tenant="nobody") == 1
    hourly = build_series(loaded, WINDOW_START, step_s=3600)
    assert {p.bucket for p in hourly.tiers} == {START}
    assert sum(p.requests for p in hourly.tiers if p.tier == "primary") == 5
    assert first_tier(loaded) == "primary"
    backup_first = build_series(loaded, WINDOW_START, primary_tier="backup", step_s=MINUTE)
    assert sum(p.primary_only_failed for p in backup_first.counterfactual) == 2  # r3, r4
    with pytest.raises(ValueError, match="step_s"):
        build_series(loaded, step_s=0)
