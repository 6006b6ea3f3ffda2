"""/metrics end to end: a running worker's page parses as Prometheus text, and
its series move by what a known workload implies; a real Prometheus server
scrapes it and PromQL gives the fallback rate per tier."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.ops.broker import EmbeddedBroker, free_port
from streams.ops.worker_process import WorkerProcess
from tests.conftest import harness_for, pipeline_config, scripted_tier

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROMETHEUS = "/usr/bin/prometheus"
FAILING, HEALTHY = 6, 4

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(worker: WorkerProcess, path: str = "/metrics") -> Series:
    response = httpx.get(worker.url + path, timeout=10.0)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in series.items() if n == name and wanted <= ls)


def config_for(broker: EmbeddedBroker, tmp_path: Path):  # type: ignore[no-untyped-def]
    no_circuit = {"enabled": False}  # every scripted failure reaches the primary
    return pipeline_config(
        broker,
        tmp_path,
        [scripted_tier("primary", circuit=no_circuit), scripted_tier("backup")],
    )


async def test_metrics_page_series_move_with_the_workload(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    async with harness_for(config_for(broker, tmp_path), tmp_path) as pipeline:
        before = scrape(pipeline.worker)
        requests = [pipeline.new_request({"primary": "error"}) for _ in range(FAILING)]
        requests += [pipeline.new_request() for _ in range(HEALTHY)]
        responses = await pipeline.ask_many(requests)
        assert [r.served_by for r in responses] == ["backup"] * FAILING + ["primary"] * HEALTHY
        await pipeline.send_raw(b"{this is not json", key=b"junk")
        await pipeline.dead_letters(until=1)

        after = scrape(pipeline.worker, "/metrics/")  # both spellings serve the page
        assert after.keys() >= {k for k in before if not k[0].startswith("fallback_consumer")}

        def grew(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        rejected = {"tier": "primary", "accepted": "false", "trigger": "error"}
        assert grew("fallback_verdicts_total", **rejected) == FAILING
        assert grew("fallback_verdicts_total", tier="primary", accepted="true") == HEALTHY
        assert grew("fallback_verdicts_total", tier="backup", accepted="true") == FAILING
        assert grew("fallback_attempts_total", tier="primary", trigger="error") == FAILING
        assert grew("fallback_attempts_total", tier="primary", called="true") == FAILING + HEALTHY
        assert grew("fallback_requests_total", status="served") == FAILING + HEALTHY
        assert grew("fallback_request_duration_seconds_count") == FAILING + HEALTHY
        assert grew("fallback_call_duration_seconds_count", tier="primary") == FAILING + HEALTHY
        assert grew("fallback_call_duration_seconds_count", tier="backup") == FAILING
        assert value(after, "fallback_calls_in_flight", tier="primary") == 0
        assert value(after, "fallback_circuit_state", tier="primary") == 0  # closed
        assert grew("fallback_dead_letters_total", stage="router") == 1
        spend = value(after, "fallback_tenant_spend_usd")
        assert spend == pytest.approx(0.001 * (FAILING + HEALTHY))  # failed calls cost nothing
        lags = [k for k in after if k[0] == "fallback_consumer_lag_records"]
        assert lags and all(after[k] >= 0 for k in lags)

        # Sink rows settle in batches: poll until every verdict is written.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = scrape(pipeline.worker)
            if value(rows, "fallback_sink_rows_written_total", table="verdicts") >= 16:
                break
            await asyncio.sleep(0.5)
        assert value(rows, "fallback_sink_rows_written_total", table="verdicts") == 16
        assert value(rows, "fallback_sink_rows_pending", table="verdicts") == 0


@pytest.fixture
def prometheus_binary() -> Iterator[str]:
    if shutil.which(PROMETHEUS) is None:
        pytest.skip(f"{PROMETHEUS} is not installed (apt-get install prometheus)")
    yield PROMETHEUS


async def test_a_prometheus_server_scrapes_the_worker(
    broker: EmbeddedBroker, tmp_path: Path, prometheus_binary: str
) -> None:
    config = config_for(broker, tmp_path)
    web = f"{config.worker.web_host}:{config.worker.web_port}"
    port = free_port()
    prometheus_yml = tmp_path / "prometheus.yml"
    prometheus_yml.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: fallback\n    static_configs: [{{targets: ['{web}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            prometheus_binary,
            f"--config.file={prometheus_yml}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        async with harness_for(config, tmp_path) as pipeline, httpx.AsyncClient() as http:
            requests = [pipeline.new_request({"primary": "error"}) for _ in range(FAILING)]
            requests += [pipeline.new_request() for _ in range(HEALTHY)]
            await pipeline.ask_many(requests)
            # The fallback rate per tier: rejected verdicts over all verdicts (a
            # tier with no rejection has no such series: `or ... * 0` gives it 0).
            rejected = (
                'sum by (tier) (max_over_time(fallback_verdicts_total{accepted="false"}[5m]))'
            )
            every = "sum by (tier) (max_over_time(fallback_verdicts_total[5m]))"
            query = f"({rejected} or {every} * 0) / {every}"
            rates: dict[str, float] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    reply = (await http.get(f"{api}/query", params={"query": query})).json()
                except httpx.HTTPError:
                    reply = {}
                rates = {
                    row["metric"]["tier"]: float(row["value"][1])
                    for row in reply.get("data", {}).get("result", [])
                }
                if rates.get("primary") == FAILING / (FAILING + HEALTHY) and "backup" in rates:
                    break
                await asyncio.sleep(1.0)
            assert rates == {"primary": FAILING / (FAILING + HEALTHY), "backup": 0.0}
            targets = (await http.get(f"{api}/targets")).json()["data"]["activeTargets"]
            assert [t["health"] for t in targets] == ["up"]
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
