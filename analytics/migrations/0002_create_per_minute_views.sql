-- Per-minute aggregates fed by materialized views on insert.
-- Counts are uniqExact on the dedupe key, so a replayed verdict/response does
-- not change them; sums and latency quantiles are at-least-once (a replayed
-- batch is counted again) -- exact figures come from the raw tables with FINAL.
-- Aggregate columns are named *_state / *_sum: ClickHouse resolves an alias
-- before a column of the same name, so `countIf(accepted) AS accepted` would
-- make a later `NOT accepted` refer to the aggregate.

CREATE TABLE IF NOT EXISTS {database}.verdicts_per_minute
(
    minute DateTime('UTC'),
    tier LowCardinality(String),
    attempts_state AggregateFunction(uniqExact, String, UInt16),
    called_state AggregateFunction(uniqExactIf, String, UInt16, UInt8),
    accepted_state AggregateFunction(uniqExactIf, String, UInt16, UInt8),
    rejected_state AggregateFunction(uniqExactIf, String, UInt16, UInt8),
    cost_usd_sum SimpleAggregateFunction(sum, Float64),
    rejected_cost_usd_sum SimpleAggregateFunction(sum, Float64),
    latency_ms_state AggregateFunction(quantilesIf(0.5, 0.95, 0.99), Float64, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, tier);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.verdicts_per_minute_mv
TO {database}.verdicts_per_minute
AS SELECT
    toStartOfMinute(decided_at) AS minute,
    tier,
    uniqExactState(request_id, attempt) AS attempts_state,
    uniqExactIfState(request_id, attempt, toUInt8(called)) AS called_state,
    uniqExactIfState(request_id, attempt, toUInt8(accepted)) AS accepted_state,
    uniqExactIfState(request_id, attempt, toUInt8(NOT accepted)) AS rejected_state,
    sum(cost_usd) AS cost_usd_sum,
    sumIf(cost_usd, NOT accepted) AS rejected_cost_usd_sum,
    quantilesIfState(0.5, 0.95, 0.99)(latency_ms, toUInt8(called)) AS latency_ms_state
FROM {database}.verdicts
GROUP BY minute, tier;

CREATE TABLE IF NOT EXISTS {database}.responses_per_minute
(
    minute DateTime('UTC'),
    status LowCardinality(String),
    requests_state AggregateFunction(uniqExact, String),
    with_deadline_state AggregateFunction(uniqExactIf, String, UInt8),
    met_deadline_state AggregateFunction(uniqExactIf, String, UInt8),
    cost_usd_sum SimpleAggregateFunction(sum, Float64),
    latency_ms_state AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, status);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.responses_per_minute_mv
TO {database}.responses_per_minute
AS SELECT
    toStartOfMinute(completed_at) AS minute,
    status,
    uniqExactState(request_id) AS requests_state,
    uniqExactIfState(request_id, toUInt8(deadline_ms IS NOT NULL)) AS with_deadline_state,
    uniqExactIfState(
        request_id,
        toUInt8(
            deadline_ms IS NOT NULL
            AND ifNull(coalesce(within_deadline, latency_ms <= deadline_ms), false)
        )
    ) AS met_deadline_state,
    sum(cost_usd) AS cost_usd_sum,
    quantilesState(0.5, 0.95, 0.99)(latency_ms) AS latency_ms_state
FROM {database}.responses
GROUP BY minute, status;
