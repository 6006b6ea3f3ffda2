"""Every SQL block of docs/operators.md runs, read-only, and gives the report's figures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics.backend import ChdbBackend
from analytics.migrate import apply_migrations
from analytics.queries import cost_summary, counterfactual, tier_fallback_rates
from analytics.read_only_sql import run_read_only
from tests.analytics.sample_events import WINDOW_START, load_sample

DOC = Path(__file__).resolve().parents[2] / "docs" / "operators.md"
WINDOW = "now() - INTERVAL 1 HOUR"
SAMPLE_WINDOW = f"toDateTime64('{WINDOW_START:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"


def doc_queries() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.DOTALL)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChdbBackend]:
    chdb = ChdbBackend(str(tmp_path / "chdb"), "model_fallback")
    try:
        apply_migrations(chdb)
        load_sample(chdb)
        yield chdb
    finally:
        chdb.close()


def run(store: ChdbBackend, sql: str) -> list[dict[str, object]]:
    assert WINDOW in sql
    result = run_read_only(store, sql.replace(WINDOW, SAMPLE_WINDOW), max_rows=100, timeout_s=10)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def test_every_query_of_the_guide_runs_read_only(store: ChdbBackend) -> None:
    queries = doc_queries()
    assert len(queries) == 7
    for sql in queries:
        assert run(store, sql), sql


def test_the_guide_gives_the_report_figures(store: ChdbBackend) -> None:
    tiers_sql, _, overall_sql, rejected_sql, _, _, counterfactual_sql = doc_queries()
    by_tier = {row["tier"]: row for row in run(store, tiers_sql)}
    for tier in tier_fallback_rates(store, WINDOW_START):
        row = by_tier[tier.tier]
        assert (row["attempts"], row["accepts"], row["skipped"]) == (
            tier.attempts,
            tier.accepted,
            tier.skipped,
        )
        assert row["fallback"] == pytest.approx(tier.fallback_rate)
        assert row["exhausted"] == pytest.approx(tier.exhausted_rate)
    cost = cost_summary(store, WINDOW_START)
    (overall,) = run(store, overall_sql)
    assert overall["cost_per_served_request_usd"] == pytest.approx(cost.cost_per_served_request_usd)
    (rejected,) = run(store, rejected_sql)
    assert rejected["rejected_attempts_cost_usd"] == pytest.approx(cost.rejected_attempts_cost_usd)
    without = counterfactual(store, WINDOW_START, primary="primary")
    assert without is not None
    (alone,) = run(store, counterfactual_sql)
    assert (
        alone["served_by_primary_alone"],
        alone["rejected_by_primary"],
        alone["never_reached_primary"],
    ) == (without.primary_served, without.rejected_by_primary, without.never_reached_primary)
    assert alone["spend_primary_alone"] == pytest.approx(without.primary_only_cost_usd)
