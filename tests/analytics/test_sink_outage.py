"""Issue 10, "Analytics outage": ClickHouse refuses connections, answers HTTP 500, then
TOO_MANY_PARTS, each for a while, in front of the real pipeline (embedded broker, a
real worker process with `analytics.backend: clickhouse`, the fake server of
tests/fakes/clickhouse_server.py backed by chDB).

Serving goes on throughout, and once the store is back every verdict and response
is in it exactly once.  The figures are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from schemas.events import Request
from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config, scripted_tier
from tests.fakes.clickhouse_server import ClickHouseFault, FakeClickHouseServer
from tests.pipeline.harness import PipelineHarness

PER_PHASE = 30
#: how long each fault lasts: several sink retries (its backoff is capped at 5 s)
PHASE_S = 4.0


async def serve_a_phase(harness: PipelineHarness, phase: str) -> int:
    """Send a phase's requests spread over PHASE_S; return how many were served."""
    requests = [Request(request_id=f"{phase}-{i}", input={}) for i in range(PER_PHASE)]
    waiters = []
    for request in requests:
        waiters.append(await harness.send(request))
        await harness.client.producer.flush()
        await asyncio.sleep(PHASE_S / PER_PHASE)
    responses = await asyncio.wait_for(asyncio.gather(*waiters), 30)
    return sum(response.status == "served" for response in responses)


async def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(condition):
            return True
        await asyncio.sleep(0.2)
    return False


async def test_serving_goes_on_and_nothing_is_lost_or_doubled_through_an_outage(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    with FakeClickHouseServer(tmp_path / "store") as store:
        config = pipeline_config(
            broker,
            tmp_path,
            [scripted_tier("primary")],
            analytics={
                "backend": "clickhouse",
                "url": store.url,
                "database": "outage",
                "batch_max_wait_ms": 200,
            },
        )
        async with harness_for(config, tmp_path) as harness:
            worker = harness.worker
            served = {"before": await serve_a_phase(harness, "before")}

            def failed_writes() -> int:
                return int(worker.get("/stats/")["analytics_sink"]["failed_writes"])

            # Each fault lasts its phase, and until the sink met it twice (its
            # backoff may sleep through a short phase).
            store.refuse_connections()
            served["refused"] = await serve_a_phase(harness, "refused")
            assert await wait_until(lambda: failed_writes() >= 2, 30)
            store.accept_connections()
            store.set_fault(ClickHouseFault.SERVER_ERROR)
            served["http_500"] = await serve_a_phase(harness, "http500")
            assert await wait_until(lambda: store.refused_inserts["server_error"] >= 2, 30)
            store.set_fault(ClickHouseFault.TOO_MANY_PARTS)
            served["too_many_parts"] = await serve_a_phase(harness, "parts")
            assert await wait_until(lambda: store.refused_inserts["too_many_parts"] >= 2, 30)
            during = worker.get("/stats/")
            health_during = httpx.get(worker.url + "/health/", timeout=5).status_code
            store.set_fault(ClickHouseFault.OK)
            recovered_at = time.monotonic()
            total = 4 * PER_PHASE

            def all_written() -> bool:
                return len(store.inserted_rows("responses")) >= total

            assert await wait_until(all_written, 30), store.inserted_rows("responses")[-3:]
            catch_up_s = time.monotonic() - recovered_at
            await asyncio.sleep(1.0)  # anything written twice would arrive by now
            metrics = worker.get("/stats/")
            health_after = httpx.get(worker.url + "/health/", timeout=5).status_code
            log = worker.log_path.read_text(errors="replace")

    responses = Counter(row["request_id"] for row in store.inserted_rows("responses"))
    verdicts = Counter(
        (row["request_id"], row["attempt"]) for row in store.inserted_rows("verdicts")
    )
    sink_lines = [line for line in log.splitlines() if "analytics sink" in line]
    print(
        f"\nanalytics outage: served per phase {served}; "
        f"during the outage: {during['analytics_sink']['pending_rows']} rows pending, "
        f"{during['analytics_sink']['failed_writes']} failed writes, /health/ {health_during}; "
        f"caught up {catch_up_s:.1f} s after the store returned; "
        f"written {metrics['analytics_sink']['written_rows']}, "
        f"failed {metrics['analytics_sink']['failed_rows']}; "
        f"refused INSERTs {dict(store.refused_inserts)}; "
        f"sink log lines {len(sink_lines)} ({sum(len(x) for x in sink_lines)} bytes), "
        f"log {len(log.splitlines())} lines"
    )
    print("a sink log line:", sink_lines[0][:300] if sink_lines else None)
    assert served == {phase: PER_PHASE for phase in served}  # serving went on
    assert health_during == 200 and health_after == 200
    assert sum(during["analytics_sink"]["pending_rows"].values()) > 0  # the outage was real
    # nothing lost, nothing written twice
    assert len(responses) == total and max(responses.values()) == 1
    assert len(verdicts) == total and max(verdicts.values()) == 1
    assert metrics["analytics_sink"]["written_rows"] == {"verdicts": total, "responses": total}
    assert metrics["analytics_sink"]["failed_rows"] == {"verdicts": 0, "responses": 0}
    assert (metrics["sunk_verdicts"], metrics["sunk_responses"]) == (total, total)
    # one line per failed write attempt, no tracebacks
    assert "Traceback" not in log
    assert len(sink_lines) <= metrics["analytics_sink"]["failed_writes"]
