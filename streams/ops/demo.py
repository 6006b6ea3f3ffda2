"""`fallback demo`: the whole pipeline on the embedded defaults, in one command.

Starts the embedded broker and a worker process (real scikit-learn models
with injected faults), sends digit images from the held-out set as requests at
a steady rate, waits for every response, then prints the analytics report and
the accuracy of the served answers against the true labels, and writes the
charts to <worker.data_dir>/demo/report.html.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from analytics.report import Report, render_report
from analytics.report_html import write_html
from analytics.series import ReportSeries
from schemas.events import Request, Response
from streams.adapters.digits import digits_holdout
from streams.config import FallbackConfig
from streams.ops.broker import free_port, running_broker
from streams.ops.client import FallbackClient
from streams.ops.worker_process import WorkerProcess, running_worker

#: the demo's own config, shipped inside the package (works from any directory)
DEMO_CONFIG = Path(__file__).with_name("demo.yaml")


async def send_and_collect(
    config: FallbackConfig, requests: list[dict[str, Any]], rate: float, progress: Progress
) -> dict[str, Response]:
    """Send at `rate` per second (each stamped `created_at` as it leaves) and wait
    for one response per request."""
    task = progress.add_task("responses", total=len(requests))
    wanted = {str(r["request_id"]) for r in requests}
    found: dict[str, Response] = {}
    async with FallbackClient(config) as client:
        await client.listen_from_now()

        async def pace() -> None:
            started = time.monotonic()
            for index, fields in enumerate(requests):
                await client.send(Request.model_validate(fields))
                ahead = index / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            await client.producer.flush()

        sender = asyncio.create_task(pace())
        async for response in client.responses(timeout_s=30.0):
            if response.request_id in wanted:
                found[response.request_id] = response
                progress.update(task, completed=len(found))
                if len(found) == len(wanted):
                    break
        await sender
    return found


def wait_for_sink(worker: WorkerProcess, responses: int, timeout_s: float = 60.0) -> None:
    """The report reads ClickHouse: wait until the sink has written every response."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.get("/stats/")["sunk_responses"] >= responses:
            return
        time.sleep(0.2)


def _is_correct(response: Response, truth: dict[str, Any]) -> bool:
    output = response.output
    return isinstance(output, dict) and output.get("label") == truth[response.request_id]


def run_demo(config: FallbackConfig, requests: int, rate: float, console: Console) -> int:
    # Everything the demo writes lives under worker.data_dir, started afresh each run.
    demo_dir = Path(config.worker.data_dir) / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    demo_dir.mkdir(parents=True, exist_ok=True)
    features, labels = digits_holdout()
    workload: list[dict[str, Any]] = [
        {
            "request_id": f"demo-{i:06d}",
            "tenant": "demo",
            "input": {"features": features[i % len(features)]},
            "deadline_ms": 3000,
        }
        for i in range(requests)
    ]
    truth = {f"demo-{i:06d}": labels[i % len(labels)] for i in range(requests)}
    with running_broker() as broker:
        console.print(f"embedded broker on {broker.bootstrap_servers}")
        worker_config = config.with_bootstrap(broker.bootstrap_servers).model_copy(
            update={
                "worker": config.worker.model_copy(update={"web_port": free_port()}),
                "analytics": config.analytics.model_copy(
                    update={"chdb_path": str(demo_dir / "chdb")}
                ),
            }
        )
        with running_worker(worker_config, demo_dir) as worker:
            console.print("starting the worker (training the demo models on first use)...")
            worker.wait_ready(timeout_s=120)
            console.print(
                f"worker ready at {worker.url}; sending {requests} requests at {rate:.0f}/s"
            )
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=console) as progress:
                started = time.monotonic()
                found = asyncio.run(send_and_collect(worker_config, workload, rate, progress))
                elapsed = time.monotonic() - started
            wait_for_sink(worker, len(found))
            report = Report.model_validate(worker.get("/report/"))
            series = ReportSeries.model_validate(worker.get("/report/series/"))
    console.print()
    render_report(report, console)
    served = [r for r in found.values() if r.status == "served"]
    correct = sum(1 for r in served if _is_correct(r, truth))
    console.print(
        f"\n{len(found)}/{requests} responses in {elapsed:.1f}s; served {len(served)}, "
        f"unavailable {sum(r.status == 'unavailable' for r in found.values())}"
    )
    if served:
        console.print(
            f"[bold]served accuracy: {correct / len(served):.1%}[/bold] "
            f"({correct}/{len(served)} against the true digit labels)"
        )
    # The primary alone would have served what it accepted (its own verdicts), nothing else.
    primary = config.primary_tier
    alone = [r for r in served if r.served_by == primary]
    alone_correct = sum(1 for r in alone if _is_correct(r, truth))
    if alone:
        console.print(
            f"{primary} alone: served accuracy {alone_correct / len(alone):.1%} "
            f"({alone_correct}/{len(alone)}); correct answers {alone_correct}/{len(found)} "
            f"requests ({alone_correct / len(found):.1%}) against {correct}/{len(found)} "
            f"({correct / len(found):.1%}) with fallback"
        )
    console.print(f"HTML report: {write_html(demo_dir / 'report.html', series, report)}")
    return 0 if len(found) == requests else 1
