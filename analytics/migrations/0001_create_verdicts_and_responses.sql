-- One row per verdict (attempt) and one per final response.
-- ReplacingMergeTree on the dedupe key: a verdict or response replayed after a
-- crash collapses into one row at merge time; readers use FINAL until then.
-- Every statement is idempotent (IF NOT EXISTS) so a half-applied run can be re-run.

CREATE TABLE IF NOT EXISTS {database}.verdicts
(
    schema_version UInt8,
    request_id String,
    tenant LowCardinality(String),
    attempt UInt16,
    tier LowCardinality(String),
    model LowCardinality(Nullable(String)),
    called Bool,
    accepted Bool,
    trigger LowCardinality(Nullable(String)),
    fallback_type LowCardinality(Nullable(String)),
    reasons Array(String),
    next_tier LowCardinality(Nullable(String)),
    latency_ms Float64,
    queue_wait_ms Float64,
    tokens_in UInt32,
    tokens_out UInt32,
    cost_usd Float64,
    confidence Nullable(Float64),
    safety_score Nullable(Float64),
    region LowCardinality(Nullable(String)),
    decided_at DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(decided_at)
ORDER BY (request_id, attempt);

CREATE TABLE IF NOT EXISTS {database}.responses
(
    schema_version UInt8,
    request_id String,
    tenant LowCardinality(String),
    status LowCardinality(String),
    served_by LowCardinality(Nullable(String)),
    model LowCardinality(Nullable(String)),
    output String CODEC(ZSTD(3)),
    confidence Nullable(Float64),
    message Nullable(String),
    latency_ms Float64,
    cost_usd Float64,
    deadline_ms Nullable(UInt64),
    within_deadline Nullable(Bool),
    attempts UInt16,
    tiers Array(LowCardinality(String)),
    created_at Nullable(DateTime64(3, 'UTC')),
    completed_at DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(completed_at)
ORDER BY request_id;
