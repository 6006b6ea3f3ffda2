from __future__ import annotations

import io

from rich.console import Console

from analytics.backend import ChdbBackend
from analytics.report import Report, build_report, render_report
from tests.analytics.sample_events import WINDOW_START, load_sample

CIRCUITS = {
    "primary": {"state": "open", "failure_rate": 0.8},
    "backup": {"state": "closed"},
    "spare": {"state": "half_open"},  # configured, no traffic in the window
}


def test_report_builds_and_round_trips_as_json(backend: ChdbBackend) -> None:
    load_sample(backend)
    report = build_report(backend, since=WINDOW_START, circuits=CIRCUITS)
    assert [t.tier for t in report.tiers] == ["primary", "backup", "local", "spare"]
    primary = report.tiers[0]
    assert primary.circuit == {"state": "open", "failure_rate": 0.8}
    assert primary.p50_ms == 850.0
    assert report.tiers[3].attempts == 0
    assert report.outcomes.served == 4
    assert report.top_triggers[0].trigger == "timeout"
    assert Report.model_validate_json(report.model_dump_json()) == report


def test_report_renders_tiers_and_figures(backend: ChdbBackend) -> None:
    load_sample(backend)
    report = build_report(backend, since=WINDOW_START, circuits=CIRCUITS)
    output = io.StringIO()
    render_report(report, Console(file=output, width=200, color_system=None))
    text = output.getvalue()
    for expected in [
        "primary",
        "backup",
        "local",
        "spare",
        "half_open",
        "80.0%",  # primary fallback rate
        "25.0%",  # backup fallback rate
        "850",  # primary p50 ms
        "$0.0065",  # cost per served request
        "$0.0120",  # cost on rejected attempts
        "66.7%",  # SLA compliance
        "timeout",
        "reliability",
        "since 2026-03-01 09:00:00 UTC",
        "Without fallback: every request to primary only",
        "4 (80.0%)",  # served with fallback, of 5 answered
        "1 (20.0%)",  # the primary alone: r1
        "circuit_open (reliability)",  # r4 never reached the primary
        "$0.0200",  # the primary alone's spend
        "$0.0060",  # what fallback cost on top
    ]:
        assert expected in text, expected


def test_empty_report_renders(backend: ChdbBackend) -> None:
    output = io.StringIO()
    render_report(build_report(backend), Console(file=output, width=200))
    assert "all time" in output.getvalue()


def test_table_shows_exhausted_next_to_fallback(backend: ChdbBackend) -> None:
    load_sample(backend)
    output = io.StringIO()
    render_report(
        build_report(backend, since=WINDOW_START),
        Console(file=output, width=200, color_system=None),
    )
    text = output.getvalue()
    assert "exhausted" in text
    backup_row = next(line for line in text.splitlines() if line.startswith("│ backup"))
    assert backup_row.count("25.0%") == 2  # fell through 1 of 4 (r3), ended there 1 of 4 (r4)


def test_report_for_one_tenant_and_one_tier(backend: ChdbBackend) -> None:
    load_sample(backend)
    report = build_report(backend, since=WINDOW_START, circuits=CIRCUITS, tier="local")
    assert [t.tier for t in report.tiers] == ["local"]
    assert report.outcomes.requests == 1  # r3, the one request that reached local
    assert report.tier == "local"
    output = io.StringIO()
    render_report(report, Console(file=output, width=200, color_system=None))
    assert "requests that reached tier local" in output.getvalue()
    nobody = build_report(backend, since=WINDOW_START, tenant="nobody")
    assert nobody.tiers == [] and nobody.outcomes.requests == 0
