-- Answer text stays out of analytics unless analytics.store_output is true, and
-- then only for analytics.output_ttl_days: the sink stamps each row's
-- output_expires_at (completed_at + the configured days; completed_at itself
-- when output is not stored), and this column TTL empties `output` once that
-- passes (ClickHouse resets an expired column to its default, '', at a merge).
-- Rows written before this migration expire 30 days after completion.
-- Both statements are idempotent: re-running them changes nothing.

ALTER TABLE {database}.responses
    ADD COLUMN IF NOT EXISTS output_expires_at DateTime('UTC')
    DEFAULT toDateTime(completed_at) + INTERVAL 30 DAY
    AFTER output;

ALTER TABLE {database}.responses
    MODIFY COLUMN output String CODEC(ZSTD(3)) TTL output_expires_at;
