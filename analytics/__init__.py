"""ClickHouse analytics of model fallback: one DDL and SQL for chDB and a server.

backend.py     AnalyticsBackend protocol, ChdbBackend, ClickHouseServerBackend, open_backend
migrate.py     numbered migrations (migrations/NNNN_*.sql), apply_migrations
rows.py        Verdict/Response -> table rows (answer text only when configured)
sink.py        ClickHouseSink (batching writer that waits out outages), open_sink
queries.py     the query library (fallback rates, SLA, latency, cost, triggers,
               the primary-alone counterfactual, series)
report.py      build_report / render_report
read_only_sql.py  run_read_only: one SELECT, read-only, row and time limits
errors.py      AnalyticsError and its subclasses
"""

from analytics.backend import AnalyticsBackend, ChdbBackend, ClickHouseServerBackend, open_backend
from analytics.errors import (
    AnalyticsError,
    AnalyticsUnavailable,
    MigrationError,
    RowsRejected,
    SinkBackpressure,
)
from analytics.migrate import apply_migrations
from analytics.report import Report, build_report, render_report
from analytics.sink import ClickHouseSink, RowReceipt, SinkStats, open_sink

__all__ = [
    "AnalyticsBackend",
    "AnalyticsError",
    "AnalyticsUnavailable",
    "ChdbBackend",
    "ClickHouseServerBackend",
    "ClickHouseSink",
    "MigrationError",
    "Report",
    "RowReceipt",
    "RowsRejected",
    "SinkBackpressure",
    "SinkStats",
    "apply_migrations",
    "build_report",
    "open_backend",
    "open_sink",
    "render_report",
]
