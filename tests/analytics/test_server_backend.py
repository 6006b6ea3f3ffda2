"""`ClickHouseServerBackend` through clickhouse-connect against a local server speaking
ClickHouse's HTTP interface (tests/fakes/clickhouse_server.py): what each failure becomes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics.backend import ClickHouseServerBackend
from analytics.errors import AnalyticsError, AnalyticsUnavailable, RowsRejected
from analytics.migrate import apply_migrations
from analytics.rows import verdict_row
from tests.analytics.sample_events import sample_verdicts
from tests.fakes.clickhouse_server import ClickHouseFault, FakeClickHouseServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeClickHouseServer]:
    with FakeClickHouseServer(tmp_path / "chdb") as fake:
        yield fake


@pytest.fixture
def backend(server: FakeClickHouseServer) -> Iterator[ClickHouseServerBackend]:
    client = ClickHouseServerBackend(server.url, "served")
    apply_migrations(client)
    yield client
    client.close()


def test_migrations_inserts_and_queries_go_through(
    server: FakeClickHouseServer, backend: ClickHouseServerBackend
) -> None:
    assert apply_migrations(backend) == []  # applied by the fixture, recorded
    rows = [verdict_row(v) for v in sample_verdicts()]
    backend.insert_rows("verdicts", rows)
    counted = backend.query("SELECT count() AS n FROM served.verdicts")
    assert counted == [{"n": len(rows)}]
    assert [r["request_id"] for r in server.inserted_rows("verdicts")] == [
        r["request_id"] for r in rows
    ]


def test_failures_are_classified_for_the_sink(
    server: FakeClickHouseServer, backend: ClickHouseServerBackend
) -> None:
    row = verdict_row(sample_verdicts()[0])
    server.set_fault(ClickHouseFault.SERVER_ERROR)
    with pytest.raises(AnalyticsUnavailable, match="HTTP status 500"):
        backend.insert_rows("verdicts", [row])
    server.set_fault(ClickHouseFault.TOO_MANY_PARTS)
    with pytest.raises(AnalyticsUnavailable, match="TOO_MANY_PARTS") as raised:
        backend.insert_rows("verdicts", [row])
    assert "\n" not in str(raised.value)
    server.set_fault(ClickHouseFault.OK)
    with pytest.raises(RowsRejected):
        backend.insert_rows("verdicts", [{**row, "attempt": "not a number"}])
    with pytest.raises(AnalyticsError) as unknown:
        backend.insert_rows("missing_table", [row])
    assert not unknown.value.retryable and not isinstance(unknown.value, RowsRejected)
    server.refuse_connections()
    try:
        with pytest.raises(AnalyticsUnavailable):
            backend.insert_rows("verdicts", [row])
    finally:
        server.accept_connections()
    backend.insert_rows("verdicts", [row])
    assert len(server.inserted_rows("verdicts")) == 1
