from __future__ import annotations

from pathlib import Path

import pytest

from analytics.backend import ChdbBackend
from analytics.errors import MigrationError
from analytics.migrate import apply_migrations, load_migrations, split_statements
from analytics.rows import RowOptions, response_row
from tests.analytics.sample_events import sample_responses

TABLES = {
    "schema_migrations",
    "verdicts",
    "responses",
    "verdicts_per_minute",
    "verdicts_per_minute_mv",
    "responses_per_minute",
    "responses_per_minute_mv",
}


def test_applying_twice_applies_nothing_the_second_time(tmp_path: Path) -> None:
    backend = ChdbBackend(str(tmp_path / "chdb"), "fresh")
    try:
        names = [migration.name for migration in load_migrations("fresh")]
        assert apply_migrations(backend) == names
        assert apply_migrations(backend) == []
        tables = {row["name"] for row in backend.query("SHOW TABLES FROM fresh")}
        assert tables == TABLES
        recorded = backend.query("SELECT name FROM fresh.schema_migrations ORDER BY name")
        assert [row["name"] for row in recorded] == names
    finally:
        backend.close()


def test_migrations_survive_reopening_the_data_directory(tmp_path: Path) -> None:
    path = str(tmp_path / "chdb")
    first = ChdbBackend(path, "kept")
    try:
        assert apply_migrations(first)
    finally:
        first.close()
    second = ChdbBackend(path, "kept")
    try:
        assert apply_migrations(second) == []
    finally:
        second.close()


def test_a_half_applied_migration_is_applied_again(backend: ChdbBackend) -> None:
    """A run that died before recording a migration re-runs its (idempotent) statements."""
    backend.command(
        f"DELETE FROM {backend.database}.schema_migrations "
        "WHERE name = '0002_create_per_minute_views'"
    )
    assert apply_migrations(backend) == ["0002_create_per_minute_views"]


def test_migration_names_are_numbered_and_unique() -> None:
    migrations = load_migrations("db")
    assert [m.name[:4] for m in migrations] == sorted({m.name[:4] for m in migrations})
    assert all("{database}" not in s for m in migrations for s in m.statements)


def test_split_statements_ignores_comments_and_blank_parts() -> None:
    sql = "-- a comment; with a semicolon\nCREATE TABLE a (x UInt8);\n\nSELECT ';' ;\n"
    assert split_statements(sql) == ["CREATE TABLE a (x UInt8)", "SELECT ';'"]


def test_a_failing_statement_names_the_migration(backend: ChdbBackend) -> None:
    backend.command(f"DROP TABLE {backend.database}.verdicts_per_minute_mv")
    backend.command(f"DROP TABLE {backend.database}.verdicts")
    backend.command(
        f"DELETE FROM {backend.database}.schema_migrations "
        "WHERE name = '0002_create_per_minute_views'"
    )
    with pytest.raises(MigrationError, match="0002_create_per_minute_views, statement 2"):
        apply_migrations(backend)


def test_output_ttl_migration_runs_twice_and_empties_expired_answers(
    backend: ChdbBackend,
) -> None:
    database = backend.database
    backend.command(f"DELETE FROM {database}.schema_migrations WHERE name = '0003_output_ttl'")
    assert apply_migrations(backend) == ["0003_output_ttl"]  # its statements ran again
    assert apply_migrations(backend) == []
    served = sample_responses()[0]  # completed in March 2026
    kept = RowOptions(store_output=True, output_ttl_days=36500)
    expired = RowOptions(store_output=True, output_ttl_days=1)
    backend.insert_rows(
        "responses",
        [
            response_row(served.model_copy(update={"request_id": "kept"}), kept),
            response_row(served.model_copy(update={"request_id": "expired"}), expired),
        ],
    )
    backend.command(f"OPTIMIZE TABLE {database}.responses FINAL")
    rows = backend.query(
        f"SELECT request_id, output, status FROM {database}.responses FINAL ORDER BY request_id"
    )
    assert rows == [
        {"request_id": "expired", "output": "", "status": "served"},  # metadata kept
        {"request_id": "kept", "output": '{"text":"answer to r1"}', "status": "served"},
    ]
