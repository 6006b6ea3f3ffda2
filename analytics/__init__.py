"""ClickHouse analytics of model fallback: one DDL and SQL for chDB and a server.

backend.py     AnalyticsBackend protocol, ChdbBackend, ClickHouseServerBackend, open_backend
migrate.py     numbered migrations (migrations/NNNN_*.sql), apply_migrations
rows.py        Verdict/Response -> table rows (answer text only when configured)
sink.py        ClickHouseSink (batching writer that waits out outages), open_sink
queries.py     the query library (fallback rates, SLA, latency, cost, triggers,
               the primary-alone counterfactual, series)
report.py      build_report / render_report
series.py      the report's figures over time (build_series)
report_html.py the self-contained HTML report with charts (write_html)
read_only_sql.py  run_read_only: one SELECT, read-only, row and time limits
errors.py      AnalyticsError and its subclasses
config.py      AnalyticsConfig, the `analytics:` section of the config

Nothing is imported here: the worker's config imports `analytics.config`, and
callers' tools must not pay for loading chDB.
"""
