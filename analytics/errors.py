"""Errors of the analytics package (see the tree in `schemas/errors.py`).

AnalyticsError (schemas.errors.FallbackError)   ClickHouse/chDB refused a statement
├── AnalyticsUnavailable                       cannot reach the store right now, retryable
│   └── ChdbDirectoryHeld                      another process (a worker) holds the chDB dir
├── RowsRejected                               the store refuses these rows as data (parse/type)
├── SqlRefused                                 `fallback sql` refuses a statement (not a read)
├── SinkBackpressure                           the sink buffer is full; carries retry_after_s
└── MigrationError                             a migration file is malformed or failed
"""

from __future__ import annotations

from schemas.errors import FallbackError


class AnalyticsError(FallbackError):
    """ClickHouse or chDB failed to run a statement (bad SQL, bad data, schema mismatch)."""


class AnalyticsUnavailable(AnalyticsError):
    """The store cannot serve right now (connection refused, memory limit, too many parts)."""

    retryable = True


class ChdbDirectoryHeld(AnalyticsUnavailable):
    """Another process holds the chDB directory: ask that process (a worker's pages)."""


class RowsRejected(AnalyticsError):
    """The store refuses the rows themselves (cannot parse or convert them): retrying
    the same rows cannot help, so the sink isolates them and reports them failed."""


class SqlRefused(AnalyticsError):
    """A statement `fallback sql` will not run: not a single read-only SELECT."""


class SinkBackpressure(AnalyticsError):
    """The sink holds more unwritten rows than its high-water mark; try again later."""

    retryable = True

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class MigrationError(AnalyticsError):
    """A migration file could not be read or one of its statements failed."""
