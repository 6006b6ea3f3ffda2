"""Where analytics rows live: chDB in-process or a ClickHouse server, same SQL.

Every method blocks.  Callers inside an asyncio loop run them on one
single-thread executor (`analytics.sink.ClickHouseSink` does), because chDB
work holds the calling thread and a chDB data directory is owned by one
process.

Rows go in as `FORMAT JSONEachRow` (measured ~120k rows/s on chDB, against
~4k rows/s for `INSERT ... VALUES` strings) and come back as JSONEachRow too, so
both backends return the same Python values.  Table names passed to
`insert_rows` are unqualified; SQL passed to `command`/`query` names tables
fully (`<database>.<table>`), see `AnalyticsBackend.database`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from pydantic import SecretStr

from analytics.config import AnalyticsConfig
from analytics.errors import (
    AnalyticsError,
    AnalyticsUnavailable,
    ChdbDirectoryHeld,
    RowsRejected,
)
from schemas.errors import ConfigError

# Settings both backends run with, so JSON output and DateTime parsing agree:
# a ClickHouse server quotes UInt64 in JSON by default and parses only the
# basic `YYYY-MM-DD hh:mm:ss[.fff]` form; chDB 4.4 does neither.
SESSION_SETTINGS: dict[str, int | str] = {
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_denormals": 0,
    "date_time_input_format": "best_effort",
}

# ClickHouse error codes that mean "try again later" rather than "this is wrong".
_RETRYABLE_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        243,  # NOT_ENOUGH_SPACE
        252,  # TOO_MANY_PARTS
        279,  # ALL_CONNECTION_TRIES_FAILED
        425,  # SYSTEM_ERROR
        439,  # CANNOT_SCHEDULE_TASK
        745,  # SERVER_OVERLOADED
        999,  # KEEPER_EXCEPTION
    }
)
# Codes that reject the data itself (ClickHouse answers most of them with HTTP 400,
# src/Server/HTTP/exceptionCodeToHTTPStatus.cpp): the same rows fail every time.
_REJECTED_ROWS_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        7,  # INCORRECT_NUMBER_OF_COLUMNS
        25,  # CANNOT_PARSE_ESCAPE_SEQUENCE
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        32,  # ATTEMPT_TO_READ_AFTER_EOF
        33,  # CANNOT_READ_ALL_DATA
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        376,  # CANNOT_PARSE_UUID
        467,  # CANNOT_PARSE_BOOL
        469,  # VIOLATED_CONSTRAINT
    }
)
_CODE_PATTERN = re.compile(r"Code:\s*(\d+)")
#: clickhouse-connect's text for an HTTP error that carried no ClickHouse code
_SERVER_FAILED = re.compile(r"HTTP status 5\d\d")
#: a server's error text can carry a stack trace; one log line holds this much of it
MAX_ERROR_CHARS = 400
#: clickhouse-connect waits 300 s for an answer by default; a hung server must not
#: hold the sink's executor (and every report query behind it) that long
CONNECT_TIMEOUT_S = 5
SEND_RECEIVE_TIMEOUT_S = 60


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error text on one line, cut at `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def error_from_clickhouse(message: str, action: str, code: int | None = None) -> AnalyticsError:
    """The project's error for a ClickHouse failure: retryable or rows-rejected by code."""
    if code is None:
        match = _CODE_PATTERN.search(message)
        code = int(match.group(1)) if match else None
    error_type: type[AnalyticsError] = AnalyticsError
    if code in _RETRYABLE_CODES:
        error_type = AnalyticsUnavailable
    elif code in _REJECTED_ROWS_CODES:
        error_type = RowsRejected
    return error_type(one_line(f"{action}: {message.strip()}"))


def json_each_row(rows: Iterable[dict[str, Any]]) -> bytes:
    """Rows as a JSONEachRow body; values that JSON cannot hold become strings."""
    return "\n".join(json.dumps(row, default=str, separators=(",", ":")) for row in rows).encode()


def parse_json_each_row(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


@dataclass(frozen=True)
class Table:
    """A query's answer with its columns: names, ClickHouse types, rows as lists."""

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]


#: one line of names, one of types, then one JSON array per row
TABLE_FORMAT = "JSONCompactEachRowWithNamesAndTypes"


def parse_table(body: bytes) -> Table:
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    if len(lines) < 2:
        return Table(columns=[], types=[], rows=[])
    return Table(columns=lines[0], types=lines[1], rows=lines[2:])


@runtime_checkable
class AnalyticsBackend(Protocol):
    """A blocking ClickHouse connection; `database` qualifies table names in SQL."""

    database: str

    def command(self, sql: str) -> None:
        """Run a statement that returns no rows (DDL, INSERT ... SELECT)."""

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Run a SELECT and return its rows as dicts."""

    def insert_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Insert rows into `<database>.<table>` in one INSERT."""

    def query_table(self, sql: str, settings: dict[str, int | float | str]) -> Table:
        """Run a SELECT with these ClickHouse settings; its column names, types and rows."""

    def close(self) -> None:
        """Release the connection; further calls fail."""


class ChdbBackend:
    """The ClickHouse engine in-process (chDB), data kept under `path`.

    chDB 4.4 allows one data path per process at a time: opening a second
    session on another path raises until the first is closed.  Its sessions
    are thread-safe, but callers still serialise on one executor thread.
    """

    def __init__(self, path: str, database: str) -> None:
        try:  # imported here: a ClickHouse-server deployment has no chDB (the `embedded` extra)
            import chdb.session
        except ImportError as exc:
            raise AnalyticsError(
                "analytics.backend chdb needs the chdb package: pip install "
                "'model-fallback[embedded]', or set analytics.backend: clickhouse"
            ) from exc

        self.database = database
        self.path = path
        self._lock = threading.Lock()
        if chdb_directory_is_held(path):
            raise ChdbDirectoryHeld(
                f"cannot open chDB at {path}: another process (a running worker?) holds it"
            )
        try:
            self._session: Any = chdb.session.Session(path)
            for name, value in SESSION_SETTINGS.items():
                self._session.query(f"SET {name} = {_sql_literal(value)}")
            self._session.query(f"CREATE DATABASE IF NOT EXISTS {database}")
        except Exception as exc:
            raise AnalyticsUnavailable(one_line(f"cannot open chDB at {path}: {exc}")) from exc

    def command(self, sql: str) -> None:
        self._run(sql, "CSV")

    def query(self, sql: str) -> list[dict[str, Any]]:
        return parse_json_each_row(self._run(sql, "JSONEachRow"))

    def insert_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        # One json.dumps of the whole list (JSONEachRow accepts a JSON array) is
        # ~1.5x faster than one per row, and a streaming insert skips building
        # one huge SQL string.
        body = json.dumps(rows, default=str, separators=(",", ":")).encode()
        statement = f"INSERT INTO {self.database}.{table}"
        with self._lock:
            session = self._open_session()
            try:
                if hasattr(session, "send_insert"):
                    with session.send_insert(statement, "JSONEachRow") as inserter:
                        inserter.append(body)
                        inserter.finish()
                else:  # chDB before 4.x has no streaming insert
                    session.query(f"{statement} FORMAT JSONEachRow\n{body.decode()}", "CSV")
            except Exception as exc:
                raise error_from_clickhouse(str(exc), f"chDB: {statement}") from exc

    def query_table(self, sql: str, settings: dict[str, int | float | str]) -> Table:
        # chDB has no per-request settings: they go in the statement's own clause.
        clause = ", ".join(f"{name} = {_sql_literal(value)}" for name, value in settings.items())
        return parse_table(self._run(f"{sql} SETTINGS {clause}" if clause else sql, TABLE_FORMAT))

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def _open_session(self) -> Any:
        if self._session is None:
            raise AnalyticsError("chDB session is closed")
        return self._session

    def _run(self, sql: str, output_format: str) -> bytes:
        with self._lock:
            session = self._open_session()
            try:
                result = session.query(sql, output_format)
            except Exception as exc:  # chdb raises ChdbError (a RuntimeError) with the server text
                raise error_from_clickhouse(str(exc), f"chDB: {_first_line(sql)}") from exc
        body: bytes = result.bytes()
        return body


def chdb_directory_is_held(path: str) -> bool:
    """True when another session holds the directory's lock (ClickHouse's `status`
    file, flock'ed while a server runs on it).  Asked first, so chDB does not
    print its own error to stderr before raising."""
    try:
        fd = os.open(os.path.join(path, "status"), os.O_RDONLY)
    except FileNotFoundError:
        return False  # removed when the last session closed
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class ClickHouseServerBackend:
    """A ClickHouse server over HTTP(S) through clickhouse-connect."""

    def __init__(
        self, url: str, database: str, username: str = "default", password: SecretStr | None = None
    ) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import Error as ClickHouseClientError

        self.database = database
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        try:
            self._client: Any = clickhouse_connect.get_client(
                host=parts.hostname or "localhost",
                port=parts.port or (8443 if secure else 8123),
                secure=secure,
                username=username,
                password=password.get_secret_value() if password else "",
                settings=dict(SESSION_SETTINGS),
                connect_timeout=CONNECT_TIMEOUT_S,
                send_receive_timeout=SEND_RECEIVE_TIMEOUT_S,
            )
            self._client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        except ClickHouseClientError as exc:
            raise _error_from_client(exc, f"cannot connect to ClickHouse at {url}") from exc
        except OSError as exc:
            raise AnalyticsUnavailable(
                one_line(f"cannot connect to ClickHouse at {url}: {exc}")
            ) from exc

    def command(self, sql: str) -> None:
        self._call(lambda: self._client.command(sql), sql)

    def query(self, sql: str) -> list[dict[str, Any]]:
        body = self._call(lambda: self._client.raw_query(sql, fmt="JSONEachRow"), sql)
        return parse_json_each_row(body)

    def insert_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        body = json_each_row(rows)
        target = f"{self.database}.{table}"
        self._call(
            lambda: self._client.raw_insert(target, insert_block=body, fmt="JSONEachRow"),
            f"INSERT INTO {target}",
        )

    def query_table(self, sql: str, settings: dict[str, int | float | str]) -> Table:
        # URL settings, checked against the user's profile before any applies: a
        # SETTINGS clause after readonly=1 would be refused ("readonly mode").
        body = self._call(
            lambda: self._client.raw_query(sql, settings=dict(settings), fmt=TABLE_FORMAT), sql
        )
        return parse_table(body)

    def close(self) -> None:
        self._client.close()

    def _call(self, run: Any, sql: str) -> Any:
        from clickhouse_connect.driver.exceptions import Error as ClickHouseClientError

        try:
            return run()
        except ClickHouseClientError as exc:
            raise _error_from_client(exc, f"ClickHouse: {_first_line(sql)}") from exc
        except OSError as exc:
            raise AnalyticsUnavailable(one_line(f"ClickHouse: {_first_line(sql)}: {exc}")) from exc


def _error_from_client(exc: Exception, action: str) -> AnalyticsError:
    from clickhouse_connect.driver.exceptions import OperationalError

    if isinstance(exc, OperationalError):  # connection refused/reset, timeouts
        return AnalyticsUnavailable(one_line(f"{action}: {exc}"))
    code = getattr(exc, "code", None)  # from the X-ClickHouse-Exception-Code header
    if code is None and _SERVER_FAILED.search(str(exc)):
        # A 5xx without a ClickHouse code: a proxy, or a server failing before
        # its query handler ran; nothing says the statement is wrong.
        return AnalyticsUnavailable(one_line(f"{action}: {exc}"))
    return error_from_clickhouse(str(exc), action, code)


def open_backend(config: AnalyticsConfig) -> AnalyticsBackend:
    """The backend the config names, with its database created if missing."""
    if config.backend == "chdb":
        if config.chdb_path is None:
            raise ConfigError("analytics.chdb_path is not set (the worker's config sets it)")
        return ChdbBackend(config.chdb_path, config.database)
    return ClickHouseServerBackend(
        config.url, config.database, username=config.username, password=config.password()
    )


def _sql_literal(value: int | float | str) -> str:
    if isinstance(value, int | float):
        return repr(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _first_line(sql: str) -> str:
    line = sql.strip().splitlines()[0] if sql.strip() else ""
    return line[:120]
