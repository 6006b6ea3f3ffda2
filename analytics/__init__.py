"""ClickHouse analytics of model fallback: one DDL and SQL for chDB and a server.

backend.py     AnalyticsBackend protocol, ChdbBackend, ClickHouseServerBackend, open_backend
migrate.py     numbered migrations (migrations/NNNN_*.sql), apply_migrations
rows.py        Verdict/Response -> table rows
sink.py        ClickHouseSink (batching writer), open_sink
queries.py     the query library (fallback rates, SLA, latency, cost, triggers, series)
report.py      build_report / render_report
series.py      the report's figures over time (build_series)
report_html.py the self-contained HTML report with charts (write_html)
errors.py      AnalyticsError and its subclasses
config.py      AnalyticsConfig, the `analytics:` section of the config

Nothing is imported here: the worker's config imports `analytics.config`, and
callers' tools must not pay for loading chDB.
"""
