"""`fallback report --html` against a running worker: the CLI reads the worker's
`/report/series/` page (the worker owns chDB) and writes the HTML file.

A tenant of its own keeps this workload apart from the other tests' traffic
on the shared pipeline: 2 served by primary, 2 falling back to backup after
primary errors (retried once), 1 unavailable after every tier rejected it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from analytics.series import ReportSeries
from streams.ops.cli import cli
from tests.pipeline.harness import PipelineHarness

pytestmark = pytest.mark.asyncio(loop_scope="session")


def series_when_sunk(harness: PipelineHarness, tenant: str, responses: int) -> ReportSeries:
    """The worker's series for `tenant` once the sink has written `responses` responses."""
    deadline = time.monotonic() + 30
    while True:
        series = ReportSeries.model_validate(harness.worker.get("/report/series/", tenant=tenant))
        written = sum(p.responses for p in series.latency)
        if written >= responses or time.monotonic() > deadline:
            return series
        time.sleep(0.3)


async def test_cli_writes_the_html_report_from_a_running_worker(
    shared_pipeline: PipelineHarness, tmp_path: Path
) -> None:
    tenant = f"html-{uuid.uuid4().hex[:6]}"
    scripts: list[dict[str, str]] = [
        {},
        {},
        {"primary": "error"},
        {"primary": "error"},
        {"primary": "error", "backup": "error", "local": "conf:0.1"},
    ]
    requests = [shared_pipeline.new_request(script, tenant=tenant) for script in scripts]
    responses = await shared_pipeline.ask_many(requests)
    assert [r.status for r in responses] == ["served"] * 4 + ["unavailable"]

    series = await asyncio.to_thread(series_when_sunk, shared_pipeline, tenant, len(scripts))
    assert series.primary_tier == "primary" and series.tenant == tenant
    primary = [p for p in series.tiers if p.tier == "primary"]
    assert sum(p.requests for p in primary) == 5
    assert sum(p.fell_through for p in primary) == 3
    counterfactual = series.counterfactual
    assert sum(p.unavailable for p in counterfactual) == 1
    assert sum(p.primary_only_failed for p in counterfactual) == 3
    # primary charges 0.01 per answer, backup 0.001, local nothing; errors are free
    assert sum(p.primary_only_cost_usd for p in counterfactual) == pytest.approx(0.02)
    assert sum(p.cost_usd for p in counterfactual) == pytest.approx(0.022)

    page = tmp_path / "report.html"
    args = ["report", "--url", shared_pipeline.worker.url, "--html", str(page), "--tenant", tenant]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args)
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert 'id="chart-counterfactual"' in text and "spend with primary only" in text
    assert f"tenant {tenant}" in text


async def test_series_page_refuses_a_bad_query(shared_pipeline: PipelineHarness) -> None:
    def get(**params: Any) -> httpx.Response:
        return httpx.get(f"{shared_pipeline.worker.url}/report/series/", params=params)

    refused = await asyncio.to_thread(get, step_s="0")
    assert refused.status_code == 400 and "step_s" in refused.json()["error"]
    refused = await asyncio.to_thread(get, since_minutes="soon")
    assert refused.status_code == 400 and "since_minutes" in refused.json()["error"]
