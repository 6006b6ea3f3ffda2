"""Numbered SQL migrations, applied in order and recorded in `schema_migrations`.

A migration is `analytics/migrations/NNNN_<what>.sql`: statements separated by
a `;` at the end of a line, `--` comment lines ignored, `{database}` replaced
by the configured database.  Every statement must be idempotent
(`IF NOT EXISTS`): a run that died between a statement and its record is
simply applied again.  Applying twice is a no-op.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from analytics.backend import AnalyticsBackend
from analytics.errors import AnalyticsError, AnalyticsUnavailable, MigrationError

MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    name: str
    statements: list[str]


def split_statements(sql: str) -> list[str]:
    without_comments = "\n".join(
        line for line in sql.splitlines() if not line.lstrip().startswith("--")
    )
    return [part.strip() for part in _STATEMENT_END.split(without_comments) if part.strip()]


def load_migrations(database: str) -> list[Migration]:
    """Every migration file shipped with the package, in number order."""
    folder = resources.files("analytics") / "migrations"
    migrations: list[Migration] = []
    numbers: set[str] = set()
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if not entry.name.endswith(".sql"):
            continue
        match = MIGRATION_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file name {entry.name!r} is not NNNN_<what>.sql")
        if match.group(1) in numbers:
            raise MigrationError(f"migration number {match.group(1)} is used twice")
        numbers.add(match.group(1))
        sql = entry.read_text(encoding="utf-8").replace("{database}", database)
        name = entry.name.removesuffix(".sql")
        migrations.append(Migration(name=name, statements=split_statements(sql)))
    return migrations


def applied_migrations(backend: AnalyticsBackend) -> set[str]:
    rows = backend.query(f"SELECT name FROM {backend.database}.schema_migrations FINAL")
    return {str(row["name"]) for row in rows}


def apply_migrations(backend: AnalyticsBackend) -> list[str]:
    """Apply the migrations not yet recorded; return the names applied by this call."""
    database = backend.database
    backend.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree(applied_at) ORDER BY name"
    )
    already = applied_migrations(backend)
    applied_now: list[str] = []
    for migration in load_migrations(database):
        if migration.name in already:
            continue
        for number, statement in enumerate(migration.statements, start=1):
            try:
                backend.command(statement)
            except AnalyticsUnavailable:
                raise  # the store is down, not the migration wrong: callers may retry
            except AnalyticsError as exc:
                raise MigrationError(
                    f"migration {migration.name}, statement {number}: {exc}"
                ) from exc
        backend.insert_rows("schema_migrations", [{"name": migration.name}])
        applied_now.append(migration.name)
    return applied_now
