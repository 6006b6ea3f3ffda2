"""Every query against figures counted by hand from `sample_events` (see its docstring)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from analytics.backend import ChdbBackend
from analytics.queries import (
    cost_summary,
    counterfactual,
    end_to_end_latency,
    outcome_counts,
    outcome_minutes,
    primary_tier,
    rejections_by_fallback_type,
    rejections_by_trigger,
    sla_compliance,
    tier_fallback_rates,
    tier_latency,
    tier_minutes,
    top_rejection_triggers,
)
from analytics.rows import response_row, verdict_row
from tests.analytics.sample_events import (
    START,
    WINDOW_START,
    load_sample,
    response,
    sample_verdicts,
    verdict,
)


@pytest.fixture
def loaded(backend: ChdbBackend) -> ChdbBackend:
    load_sample(backend)
    return backend


def every_figure(backend: ChdbBackend) -> list[object]:
    return [
        tier_fallback_rates(backend, WINDOW_START),
        tier_latency(backend, WINDOW_START),
        end_to_end_latency(backend, WINDOW_START),
        sla_compliance(backend, WINDOW_START),
        cost_summary(backend, WINDOW_START),
        outcome_counts(backend, WINDOW_START),
        rejections_by_trigger(backend, WINDOW_START),
        rejections_by_fallback_type(backend, WINDOW_START),
        outcome_counts(backend),
    ]


def test_inserting_everything_twice_changes_no_figure(backend: ChdbBackend) -> None:
    """A replay after a crash re-inserts verdicts and responses: the queries must not move."""
    load_sample(backend)
    once = every_figure(backend)
    load_sample(backend)
    assert every_figure(backend) == once
    counts = [(p.minute, p.tier, p.attempts, p.accepted, p.rejected) for p in tier_minutes(backend)]
    load_sample(backend)
    assert [
        (p.minute, p.tier, p.attempts, p.accepted, p.rejected) for p in tier_minutes(backend)
    ] == counts


def test_duplicates_stay_in_raw_table_until_merged(backend: ChdbBackend) -> None:
    load_sample(backend, copies=2)
    raw = backend.query(f"SELECT count() AS n FROM {backend.database}.verdicts")[0]["n"]
    final = backend.query(f"SELECT count() AS n FROM {backend.database}.verdicts FINAL")[0]["n"]
    assert (raw, final) == (2 * len(sample_verdicts()), len(sample_verdicts()))


def test_tier_fallback_rates(loaded: ChdbBackend) -> None:
    tiers = tier_fallback_rates(loaded, WINDOW_START)
    assert [t.tier for t in tiers] == ["primary", "backup", "local"]
    primary, backup, local = tiers
    assert (primary.attempts, primary.called, primary.skipped) == (5, 4, 1)
    assert (primary.accepted, primary.rejected, primary.requests) == (1, 4, 5)
    assert (primary.fell_through, primary.exhausted) == (4, 0)
    assert primary.acceptance_rate == pytest.approx(0.2)
    assert primary.fallback_rate == pytest.approx(0.8)
    assert primary.cost_usd == pytest.approx(0.02)
    assert primary.rejected_cost_usd == pytest.approx(0.01)

    assert (backup.attempts, backup.called, backup.skipped) == (4, 3, 1)
    assert (backup.accepted, backup.rejected, backup.requests) == (2, 2, 4)
    assert (backup.fell_through, backup.exhausted) == (1, 1)
    assert backup.acceptance_rate == pytest.approx(0.5)
    assert backup.fallback_rate == pytest.approx(0.25)
    assert backup.cost_usd == pytest.approx(0.006)
    assert backup.rejected_cost_usd == pytest.approx(0.002)

    assert (local.attempts, local.accepted, local.fell_through) == (1, 1, 0)
    assert local.fallback_rate == 0.0


def test_window_excludes_older_rows(loaded: ChdbBackend) -> None:
    all_time = {t.tier: t for t in tier_fallback_rates(loaded)}
    assert all_time["primary"].attempts == 6  # r0, two hours before the window
    assert outcome_counts(loaded).requests == 7
    assert outcome_counts(loaded, START + timedelta(minutes=1)).requests == 1  # r6 only


def test_tier_latency_counts_called_attempts_only(loaded: ChdbBackend) -> None:
    latency = {t.tier: t for t in tier_latency(loaded, WINDOW_START)}
    # primary calls: 100, 200, 1500, 1500 (the circuit_open skip has no latency)
    assert latency["primary"].count == 4
    assert latency["primary"].p50_ms == pytest.approx(850.0)
    assert latency["primary"].p95_ms == pytest.approx(1500.0)
    # backup calls: 250, 300, 400 (linear interpolation between ranks)
    assert latency["backup"].count == 3
    assert latency["backup"].p50_ms == pytest.approx(300.0)
    assert latency["backup"].p95_ms == pytest.approx(390.0)
    assert latency["backup"].p99_ms == pytest.approx(398.0)
    assert latency["local"].p99_ms == pytest.approx(50.0)


def test_end_to_end_latency_skips_invalid(loaded: ChdbBackend) -> None:
    latency = end_to_end_latency(loaded, WINDOW_START)
    # 5, 110, 700, 1760, 1820
    assert latency.count == 5
    assert latency.p50_ms == pytest.approx(700.0)
    assert latency.p95_ms == pytest.approx(1808.0)
    assert latency.p99_ms == pytest.approx(1817.6)


def test_sla_compliance(loaded: ChdbBackend) -> None:
    sla = sla_compliance(loaded, WINDOW_START)
    assert (sla.with_deadline, sla.met_deadline, sla.served_within_deadline) == (3, 2, 2)
    assert sla.compliance == pytest.approx(2 / 3)
    assert sla.served_compliance == pytest.approx(2 / 3)


def test_cost_summary(loaded: ChdbBackend) -> None:
    cost = cost_summary(loaded, WINDOW_START)
    assert cost.total_cost_usd == pytest.approx(0.026)
    assert cost.served == 4
    assert cost.served_cost_usd == pytest.approx(0.026)
    assert cost.cost_per_served_request_usd == pytest.approx(0.0065)
    assert cost.rejected_attempts_cost_usd == pytest.approx(0.012)


def test_outcome_counts(loaded: ChdbBackend) -> None:
    outcomes = outcome_counts(loaded, WINDOW_START)
    assert (outcomes.requests, outcomes.served, outcomes.unavailable, outcomes.invalid) == (
        6,
        4,
        1,
        1,
    )


def test_rejections_by_trigger(loaded: ChdbBackend) -> None:
    triggers = rejections_by_trigger(loaded, WINDOW_START)
    assert [(t.trigger, t.rejections) for t in triggers] == [
        ("timeout", 2),
        ("circuit_open", 1),
        ("low_confidence", 1),
        ("over_budget", 1),
        ("unsafe", 1),
    ]
    timeout = triggers[0]
    assert timeout.fallback_type == "reliability"
    assert (timeout.requests, timeout.fell_through) == (2, 2)
    assert timeout.share == pytest.approx(2 / 6)
    over_budget = next(t for t in triggers if t.trigger == "over_budget")
    assert (over_budget.fallback_type, over_budget.fell_through) == ("cost", 0)
    low_confidence = next(t for t in triggers if t.trigger == "low_confidence")
    assert low_confidence.cost_usd == pytest.approx(0.01)

    top = top_rejection_triggers(loaded, WINDOW_START, limit=2)
    assert [t.trigger for t in top] == ["timeout", "circuit_open"]
    assert top[0].share == pytest.approx(2 / 6)  # share of all rejections, not of the top


def test_rejections_by_fallback_type(loaded: ChdbBackend) -> None:
    by_type = rejections_by_fallback_type(loaded, WINDOW_START)
    assert [(t.fallback_type, t.rejections, t.requests, t.fell_through) for t in by_type] == [
        ("reliability", 3, 3, 3),
        ("quality", 2, 1, 2),
        ("cost", 1, 1, 0),
    ]
    assert by_type[1].cost_usd == pytest.approx(0.012)
    assert sum(t.share for t in by_type) == pytest.approx(1.0)


def test_tier_minutes_from_materialized_view(loaded: ChdbBackend) -> None:
    series = tier_minutes(loaded, WINDOW_START)
    by_key = {(point.minute, point.tier): point for point in series}
    first = by_key[(START, "primary")]  # r1..r4
    assert (first.attempts, first.called, first.accepted, first.rejected) == (4, 3, 1, 3)
    assert first.p50_ms == pytest.approx(200.0)  # calls 100, 200, 1500
    second = by_key[(START + timedelta(minutes=1), "primary")]  # r6
    assert (second.attempts, second.rejected) == (1, 1)
    backup_first = by_key[(START, "backup")]  # r2 ok, r3 unsafe, r4 over_budget skip
    assert (backup_first.attempts, backup_first.called, backup_first.rejected) == (3, 2, 2)
    assert [p.tier for p in tier_minutes(loaded, WINDOW_START, tier="local")] == ["local"]


def test_tier_minutes_sums_are_at_least_once(backend: ChdbBackend) -> None:
    """The view's counts dedupe on (request_id, attempt); its cost sum counts a replay twice."""
    load_sample(backend, copies=2)
    first = next(
        p for p in tier_minutes(backend, WINDOW_START) if (p.minute, p.tier) == (START, "primary")
    )
    assert first.attempts == 4
    assert first.cost_usd == pytest.approx(2 * 0.02)


def test_outcome_minutes_from_materialized_view(loaded: ChdbBackend) -> None:
    series = {(p.minute, p.status): p for p in outcome_minutes(loaded, WINDOW_START)}
    served = series[(START, "served")]  # r1, r2, r3
    assert (served.requests, served.with_deadline, served.met_deadline) == (3, 3, 2)
    assert series[(START, "unavailable")].requests == 1
    assert series[(START + timedelta(minutes=1), "served")].requests == 1


def test_empty_window_has_no_rates(backend: ChdbBackend) -> None:
    assert tier_fallback_rates(backend) == []
    assert sla_compliance(backend).compliance is None
    assert cost_summary(backend).cost_per_served_request_usd is None
    assert end_to_end_latency(backend).p50_ms is None
    assert rejections_by_trigger(backend) == []


def test_exhausted_is_the_share_that_ended_unavailable_at_the_tier(loaded: ChdbBackend) -> None:
    tiers = {t.tier: t for t in tier_fallback_rates(loaded, WINDOW_START)}
    # backup: r2, r3, r4, r6 reached it; r4 ended there (over_budget, no tier left)
    assert tiers["backup"].exhausted_rate == pytest.approx(0.25)
    assert tiers["primary"].exhausted_rate == 0.0
    served = {"primary": 1, "backup": 2, "local": 1}  # r1; r2, r6; r3
    for tier in tiers.values():  # served + fell through + exhausted = every request
        shares = served[tier.tier] / tier.requests
        shares += (tier.fallback_rate or 0) + (tier.exhausted_rate or 0)
        assert shares == pytest.approx(1.0)


def test_tenant_and_tier_filters(loaded: ChdbBackend) -> None:
    other = sample_verdicts()[0].model_copy(update={"tenant": "other", "request_id": "x1"})
    loaded.insert_rows("verdicts", [verdict_row(other)])
    assert [(t.tier, t.attempts) for t in tier_fallback_rates(loaded, tenant="other")] == [
        ("primary", 1)
    ]
    acme = {t.tier: t.attempts for t in tier_fallback_rates(loaded, WINDOW_START, tenant="acme")}
    assert acme["primary"] == 5
    assert tier_fallback_rates(loaded, WINDOW_START, tenant="nobody") == []
    assert outcome_counts(loaded, WINDOW_START, tenant="acme").requests == 6
    assert outcome_counts(loaded, WINDOW_START, tenant="nobody").requests == 0

    # tier: that tier's attempts, and the requests that reached it
    assert [t.tier for t in tier_fallback_rates(loaded, WINDOW_START, tier="backup")] == ["backup"]
    reached_local = outcome_counts(loaded, WINDOW_START, tier="local")  # r3 only
    assert (reached_local.requests, reached_local.served) == (1, 1)
    assert cost_summary(loaded, WINDOW_START, tier="local").total_cost_usd == pytest.approx(0.012)
    assert [t.trigger for t in rejections_by_trigger(loaded, WINDOW_START, tier="backup")] == [
        "over_budget",
        "unsafe",
    ]
    assert sla_compliance(loaded, WINDOW_START, tier="backup").with_deadline == 2  # r2, r3
    assert end_to_end_latency(loaded, WINDOW_START, tier="local").count == 1
    assert [t.tier for t in tier_latency(loaded, WINDOW_START, tier="local")] == ["local"]
    assert rejections_by_fallback_type(loaded, WINDOW_START, tier="local") == []


def test_counterfactual_primary_alone(loaded: ChdbBackend) -> None:
    """r1 primary ok; r2, r6 primary timeout; r3 primary low_confidence; r4 primary's
    circuit open (never reached it); r5 invalid (not counted)."""
    assert primary_tier(loaded, WINDOW_START) == "primary"
    without = counterfactual(loaded, WINDOW_START)
    assert without is not None
    assert (without.requests, without.actual_served) == (5, 4)
    assert (without.primary_served, without.would_fail) == (1, 4)
    assert (without.rejected_by_primary, without.never_reached_primary) == (3, 1)
    assert without.primary_only_cost_usd == pytest.approx(0.02)  # r1 0.01 + r3 0.01
    assert without.actual_cost_usd == pytest.approx(0.026)
    assert without.extra_cost_usd == pytest.approx(0.006)
    assert [(f.trigger, f.fallback_type, f.called, f.requests) for f in without.failures] == [
        ("timeout", "reliability", True, 2),
        ("circuit_open", "reliability", False, 1),
        ("low_confidence", "quality", True, 1),
    ]
    # a request the router sent past the primary (no primary verdict) fails without it
    routed_past = verdict("r7", 1, "local", accepted=True, latency_ms=10, cost_usd=0.0)
    loaded.insert_rows("verdicts", [verdict_row(routed_past)])
    served = response("r7", "served", served_by="local", latency_ms=10, cost_usd=0.0)
    loaded.insert_rows("responses", [response_row(served)])
    later = counterfactual(loaded, WINDOW_START, primary="primary")
    assert later is not None and later.would_fail == 5
    assert ("not_routed", None, False, 1) in [
        (f.trigger, f.fallback_type, f.called, f.requests) for f in later.failures
    ]
    nobody = counterfactual(loaded, WINDOW_START, tenant="nobody")
    assert nobody is not None and nobody.requests == 0
