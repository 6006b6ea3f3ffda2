"""Every request gets exactly one final response; ClickHouse holds one verdict per attempt.

Counted on raw rows (no FINAL: the tables are ReplacingMergeTrees on the key,
and FINAL folds duplicates away) and on the verdicts topic itself (a
background merge may fold duplicate rows too; the topic keeps every record)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from analytics.backend import ChdbBackend
from schemas.events import Request
from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config, scripted_tier
from tests.pipeline.delivery_check import verdict_events
from tests.pipeline.harness import PipelineHarness

pytestmark = pytest.mark.asyncio(loop_scope="session")

SCRIPTS = [
    {},
    {"primary": "error"},
    {"primary": "conf:0.2"},
    {"primary": "sleep:350"},
    {"primary": "error", "backup": "conf:0.1"},
    {"primary": "error", "backup": "error", "local": "conf:0.1"},
]


def mixed_requests(harness: PipelineHarness, count: int) -> list[Request]:
    rng = random.Random(42)
    return [harness.new_request(rng.choice(SCRIPTS)) for _ in range(count)]


async def test_one_response_per_request_and_verdicts_match_clickhouse(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    config = pipeline_config(
        broker,
        tmp_path,
        [scripted_tier("primary"), scripted_tier("backup"), scripted_tier("local")],
    )
    async with harness_for(config, tmp_path) as harness:
        requests = mixed_requests(harness, 300)
        # A caller resending the same request must not get a second answer.
        requests += requests[:20]
        responses = await harness.ask_many(requests, timeout_s=90)
        wanted = {r.request_id for r in requests}
        records = await harness.read_topic(
            harness.client.topics.responses, until=len(wanted) + 5, timeout_s=5
        )
        metrics = harness.worker.get("/stats/")
        verdict_records = await verdict_events(config)
        harness.worker.stop()  # releases the chDB directory
    per_request: dict[str, int] = {}
    for record in records:
        key = record.key.decode()
        per_request[key] = per_request.get(key, 0) + 1
    assert set(per_request) == wanted
    assert set(per_request.values()) == {1}, "some request got more than one final response"
    assert metrics["duplicates"] >= 20
    statuses = {r.status for r in responses}
    assert statuses == {"served", "unavailable"}

    backend = ChdbBackend(config.analytics.chdb_path, config.analytics.database)
    try:
        db = config.analytics.database
        rows = backend.query(
            f"SELECT request_id, attempt, tier, accepted, trigger FROM {db}.verdicts "
            "ORDER BY request_id, attempt"
        )
        verdict_counts = backend.query(
            f"SELECT count() AS raw, uniqExact(request_id, attempt) AS keys FROM {db}.verdicts"
        )[0]
        response_rows = backend.query(f"SELECT request_id, status, served_by FROM {db}.responses")
        response_counts = backend.query(
            f"SELECT count() AS raw, uniqExact(request_id) AS keys FROM {db}.responses"
        )[0]
    finally:
        backend.close()
    assert set(verdict_records.values()) == {1}, "an attempt has more than one verdict"
    assert int(verdict_counts["raw"]) == int(verdict_counts["keys"]) == len(verdict_records)
    assert int(response_counts["raw"]) == int(response_counts["keys"]) == len(wanted)
    by_request: dict[str, list[tuple[int, str, bool, str | None]]] = {}
    for row in rows:
        by_request.setdefault(row["request_id"], []).append(
            (int(row["attempt"]), row["tier"], bool(row["accepted"]), row["trigger"] or None)
        )
    unique = {r.request_id: r for r in responses}
    assert set(by_request) == set(unique)
    for request_id, response in unique.items():
        expected = [
            (a.attempt, a.tier, a.accepted, a.trigger.value if a.trigger else None)
            for a in response.attempts
        ]
        assert by_request[request_id] == expected, request_id  # a duplicate row fails this
    assert sorted(
        (r["request_id"], r["status"], r["served_by"] or None) for r in response_rows
    ) == sorted((r.request_id, r.status, r.served_by) for r in unique.values())
