"""Read-only SQL on chDB and through a ClickHouse server (clickhouse-connect, readonly=1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics.backend import ChdbBackend, ClickHouseServerBackend
from analytics.errors import AnalyticsError, SqlRefused
from analytics.migrate import apply_migrations
from analytics.read_only_sql import run_read_only, sql_result_csv
from analytics.rows import verdict_row
from tests.analytics.sample_events import load_sample, sample_verdicts
from tests.fakes.clickhouse_server import FakeClickHouseServer


def count(backend: ChdbBackend) -> int:
    return int(backend.query(f"SELECT count() AS n FROM {backend.database}.verdicts")[0]["n"])


def test_a_select_returns_columns_types_and_rows(backend: ChdbBackend) -> None:
    load_sample(backend)
    result = run_read_only(
        backend,
        f"SELECT tier, count() AS attempts FROM {backend.database}.verdicts FINAL "
        "GROUP BY tier ORDER BY tier -- a comment;",
        max_rows=100,
        timeout_s=5,
    )
    assert result.columns == ["tier", "attempts"]
    assert result.types == ["LowCardinality(String)", "UInt64"]
    assert result.rows == [["backup", 4], ["local", 1], ["primary", 6]]
    assert not result.truncated
    assert sql_result_csv(result).splitlines()[:2] == ["tier,attempts", "backup,4"]


def test_rows_are_capped(backend: ChdbBackend) -> None:
    result = run_read_only(backend, "SELECT number FROM numbers(50)", max_rows=10, timeout_s=5)
    assert len(result.rows) == 10 and result.truncated


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO analytics_test.verdicts SELECT * FROM analytics_test.verdicts",
        "DROP TABLE analytics_test.verdicts",
        "ALTER TABLE analytics_test.verdicts DELETE WHERE 1",
        "TRUNCATE TABLE analytics_test.verdicts",
        "SET readonly = 0",
        "SELECT 1; DROP TABLE analytics_test.verdicts",
        "SELECT 1) ; DROP TABLE analytics_test.verdicts; SELECT (1",
        "SELECT 1 FORMAT JSON",
    ],
)
def test_writes_ddl_and_tricks_are_refused(backend: ChdbBackend, sql: str) -> None:
    load_sample(backend)
    before = count(backend)
    with pytest.raises(SqlRefused):
        run_read_only(backend, sql, max_rows=10, timeout_s=5)
    assert count(backend) == before


def test_reading_files_and_running_long_are_stopped(backend: ChdbBackend) -> None:
    with pytest.raises(AnalyticsError, match="READONLY"):
        run_read_only(
            backend, "SELECT * FROM file('/etc/hostname', 'LineAsString')", max_rows=5, timeout_s=5
        )
    with pytest.raises(AnalyticsError, match=r"TIMEOUT_EXCEEDED|Timeout exceeded"):
        run_read_only(backend, "SELECT count() FROM system.numbers", max_rows=5, timeout_s=0.5)


def test_through_a_clickhouse_server_with_readonly_1(tmp_path: Path) -> None:
    with FakeClickHouseServer(tmp_path / "store") as server:
        client = ClickHouseServerBackend(server.url, "served")
        try:
            apply_migrations(client)
            client.insert_rows("verdicts", [verdict_row(v) for v in sample_verdicts()])
            result = run_read_only(
                client, "SELECT count() AS n FROM served.verdicts", max_rows=5, timeout_s=5
            )
            assert result.rows == [[len(sample_verdicts())]]
            sent = server.requests[-1].body["params"]
            assert (sent["readonly"], sent["max_execution_time"]) == ("1", "5")
            with pytest.raises(SqlRefused):
                run_read_only(client, "DROP TABLE served.verdicts", max_rows=5, timeout_s=5)
            # and the server itself applies readonly=1: no table function reads a file
            with pytest.raises(AnalyticsError, match="READONLY"):
                run_read_only(
                    client,
                    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
                    max_rows=5,
                    timeout_s=5,
                )
        finally:
            client.close()
