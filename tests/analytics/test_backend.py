from __future__ import annotations

import socket
from pathlib import Path

import pytest

from analytics.backend import (
    AnalyticsBackend,
    ChdbBackend,
    ClickHouseServerBackend,
    error_from_clickhouse,
    open_backend,
)
from analytics.errors import AnalyticsError, AnalyticsUnavailable, RowsRejected
from streams.config import AnalyticsConfig


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_open_backend_creates_the_chdb_database(tmp_path: Path) -> None:
    config = AnalyticsConfig(chdb_path=str(tmp_path / "chdb"), database="made_here")
    backend = open_backend(config)
    try:
        assert isinstance(backend, AnalyticsBackend)
        names = {row["name"] for row in backend.query("SHOW DATABASES")}
        assert "made_here" in names
        # 64-bit integers come back as numbers, not JSON strings
        assert backend.query("SELECT toUInt64(5) AS n, count() AS c FROM numbers(3)") == [
            {"n": 5, "c": 3}
        ]
    finally:
        backend.close()


def test_chdb_sql_errors_are_analytics_errors(backend: ChdbBackend) -> None:
    with pytest.raises(AnalyticsError, match="UNKNOWN_TABLE") as raised:
        backend.query(f"SELECT * FROM {backend.database}.missing")
    assert not raised.value.retryable
    with pytest.raises(AnalyticsError):
        backend.insert_rows("verdicts", [{"attempt": "not a number"}])


def test_chdb_holds_one_data_path_per_process(tmp_path: Path, backend: ChdbBackend) -> None:
    """chDB 4.4 quirk: a second path cannot be opened while the first session is open."""
    with pytest.raises(AnalyticsUnavailable, match="cannot open chDB"):
        ChdbBackend(str(tmp_path / "other"), "other")


def test_closed_backend_refuses_work(tmp_path: Path) -> None:
    backend = ChdbBackend(str(tmp_path / "chdb"), "closed")
    backend.close()
    backend.close()  # twice is fine
    with pytest.raises(AnalyticsError, match="closed"):
        backend.query("SELECT 1")


def test_unreachable_server_is_unavailable() -> None:
    with pytest.raises(AnalyticsUnavailable, match="cannot connect"):
        ClickHouseServerBackend(f"http://127.0.0.1:{free_port()}", "db")


def test_retryable_clickhouse_codes() -> None:
    assert error_from_clickhouse("Code: 241. DB::Exception: Memory limit", "x").retryable
    assert error_from_clickhouse("Code: 252. Too many parts", "x").retryable
    assert not error_from_clickhouse("Code: 62. Syntax error", "x").retryable
    assert not error_from_clickhouse("no code at all", "x").retryable
    rejected = error_from_clickhouse("Code: 27. Cannot parse input\n  stack frame", "x")
    assert isinstance(rejected, RowsRejected) and not rejected.retryable
    assert "\n" not in str(rejected)
