"""Read-only SQL against the analytics store (`fallback sql`, the worker's /sql/ page).

A statement runs only if it is one SELECT (`WITH ... SELECT` and `UNION`
included), checked in three layers, each enough to stop a write on its own:

1. ClickHouse's own parser reads it (`formatQuerySingleLine`, the statement
   passed as a string literal): more than one statement, or one that does not
   parse, is refused; so is any kind but SELECT.
2. The formatted statement runs as a subquery, `SELECT * FROM (<it>) LIMIT n`:
   no INSERT, DDL or second statement can stand inside the parentheses, and
   the formatted text holds no comment to hide one.
3. With `readonly = 1` (no writes, no settings changes, no table functions
   that read files or URLs) and `max_execution_time`; on a ClickHouse server
   as URL settings (clickhouse-connect), on chDB in the statement.

Rows are capped at `max_rows` (`truncated` says when more were there).
"""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Any

from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.table import Table as RichTable

from analytics.backend import AnalyticsBackend
from analytics.errors import AnalyticsError, SqlRefused
from analytics.queries import sql_string

READ_KINDS = ("SELECT", "WITH")
_FORMAT_CLAUSE = re.compile(r"\sFORMAT\s+\w+$", re.IGNORECASE)


class SqlResult(BaseModel):
    """A read-only query's answer, JSON-able for the worker's page."""

    model_config = ConfigDict(frozen=True)

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool
    elapsed_ms: float


def check_read_only(backend: AnalyticsBackend, sql: str) -> str:
    """The statement as ClickHouse formats it, or `SqlRefused` saying why not."""
    statement = sql.strip().rstrip(";").strip()
    if not statement:
        raise SqlRefused("no SQL given")
    try:
        rows = backend.query(f"SELECT formatQuerySingleLine({sql_string(statement)}) AS query")
    except AnalyticsError as exc:
        raise SqlRefused(f"not one statement ClickHouse can parse: {exc}") from None
    formatted = str(rows[0]["query"])
    kind = formatted.split(None, 1)[0].upper() if formatted.split() else ""
    if kind not in READ_KINDS:
        raise SqlRefused(
            f"only SELECT queries run here (read-only); this is {kind or 'empty'}: "
            "writes, DDL and settings are refused"
        )
    if _FORMAT_CLAUSE.search(formatted):
        raise SqlRefused("leave out FORMAT: choose the output with --json or --csv")
    return formatted


def run_read_only(
    backend: AnalyticsBackend, sql: str, *, max_rows: int, timeout_s: float
) -> SqlResult:
    """Run one SELECT read-only, at most `max_rows` rows and `timeout_s` seconds."""
    formatted = check_read_only(backend, sql)
    started = time.monotonic()
    table = backend.query_table(
        f"SELECT * FROM ({formatted}) LIMIT {max_rows + 1}",
        {"readonly": 1, "max_execution_time": timeout_s},
    )
    elapsed_ms = (time.monotonic() - started) * 1000
    return SqlResult(
        columns=table.columns,
        types=table.types,
        rows=table.rows[:max_rows],
        truncated=len(table.rows) > max_rows,
        elapsed_ms=elapsed_ms,
    )


# ------------------------------------------------------------ rendering ----


def render_sql_table(result: SqlResult, console: Console) -> None:
    table = RichTable(
        caption=f"{len(result.rows)} rows"
        + (" (truncated: raise the row limit or narrow the query)" if result.truncated else "")
        + f", {result.elapsed_ms:.0f} ms"
    )
    for name, kind in zip(result.columns, result.types, strict=True):
        numeric = kind.startswith(("UInt", "Int", "Float", "Decimal", "Nullable(UInt"))
        table.add_column(name, justify="right" if numeric else "left")
    for row in result.rows:
        table.add_row(*("NULL" if value is None else str(value) for value in row))
    console.print(table)


def sql_result_csv(result: SqlResult) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(result.columns)
    writer.writerows(result.rows)
    return out.getvalue()
