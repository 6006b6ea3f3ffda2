from __future__ import annotations

from pathlib import Path

import pytest

from analytics.backend import ChdbBackend
from analytics.errors import MigrationError
from analytics.migrate import apply_migrations, load_migrations, split_statements

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
