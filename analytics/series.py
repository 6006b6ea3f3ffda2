"""Figures over time: the series behind the charts of `fallback report --html`.

Every series is bucketed by `step_s` seconds (by default the smallest of
`STEPS_S` that keeps the window's traffic within `MAX_BUCKETS` buckets) and read
from the raw tables with `FINAL`, so the figures are exact (the per-minute
views' sums are at-least-once) and the tenant filter works (the views have no
tenant).  Verdicts are bucketed by `decided_at`, responses by `completed_at`.

Filters, as for the text report: `since` (None = all time), `tenant`, and
`tier`.  `tier` narrows what is about tiers (fallback rate, call latency,
cost, rejections by type) to that tier, and end-to-end latency to the
requests that reached it; the counterfactual is about the whole ladder and
ignores it.

The counterfactual: had every request gone to the primary tier only, spend is
what the primary's own verdicts cost, and the requests that would have failed
are those the primary rejected or skipped (its outages, open circuit).
Requests that never reached the primary (policy sent them elsewhere) are not
in it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from analytics.backend import AnalyticsBackend
from analytics.queries import QUANTILES, sql_string
from analytics.rows import clickhouse_datetime

STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
MAX_BUCKETS = 90


class Point(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: datetime = Field(description="start of the bucket (UTC)")


class TierPoint(Point):
    """One tier in one bucket.  `fallback_rate` = fell_through / requests."""

    tier: str
    requests: int
    fell_through: int
    exhausted: int
    calls: int
    cost_usd: float
    rejected_cost_usd: float
    fallback_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class LatencyPoint(Point):
    """End-to-end latency of the responses in one bucket (invalid ones never ran)."""

    responses: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class FallbackTypePoint(Point):
    fallback_type: str
    rejections: int


class CounterfactualPoint(Point):
    """Real spend and failures against the primary tier alone, in one bucket."""

    cost_usd: float
    primary_only_cost_usd: float
    unavailable: int
    primary_only_failed: int


class ReportSeries(BaseModel):
    """Every series of the HTML report, JSON-able (the worker sends it over HTTP)."""

    model_config = ConfigDict(frozen=True)

    generated_at: datetime
    since: datetime | None
    tenant: str | None
    tier: str | None
    step_s: int
    primary_tier: str | None
    tiers: list[TierPoint]
    latency: list[LatencyPoint]
    fallback_types: list[FallbackTypePoint]
    counterfactual: list[CounterfactualPoint]


def build_series(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    tenant: str | None = None,
    tier: str | None = None,
    primary_tier: str | None = None,
    step_s: int | None = None,
) -> ReportSeries:
    """All series since `since`; `primary_tier` None = the tier most requests tried
    first; `step_s` None = `auto_step_s`."""
    if step_s is not None and step_s < 1:
        raise ValueError(f"step_s must be at least 1 second, not {step_s}")
    step_s = step_s or auto_step_s(backend, since, tenant)
    primary = primary_tier or first_tier(backend, since, tenant)
    return ReportSeries(
        generated_at=datetime.now(UTC),
        since=since,
        tenant=tenant,
        tier=tier,
        step_s=step_s,
        primary_tier=primary,
        tiers=tier_series(backend, since, tenant, tier, step_s),
        latency=latency_series(backend, since, tenant, tier, step_s),
        fallback_types=fallback_type_series(backend, since, tenant, tier, step_s),
        counterfactual=[]
        if primary is None
        else counterfactual_series(backend, primary, since, tenant, step_s),
    )


# ------------------------------------------------------------- queries ----


def auto_step_s(
    backend: AnalyticsBackend, since: datetime | None = None, tenant: str | None = None
) -> int:
    """The smallest of `STEPS_S` that spreads the window's verdicts over at most
    `MAX_BUCKETS` buckets (a 20 s demo gets 1 s buckets, an hour one-minute ones)."""
    row = backend.query(
        f"""
        SELECT count() AS verdicts, dateDiff('second', min(decided_at), max(decided_at)) AS span_s
        FROM {backend.database}.verdicts
        {_where("decided_at", since, tenant, None)}
        """
    )[0]
    span_s = row["span_s"] if row["verdicts"] else 0
    return next((step for step in STEPS_S if span_s / step < MAX_BUCKETS), STEPS_S[-1])


def first_tier(
    backend: AnalyticsBackend, since: datetime | None = None, tenant: str | None = None
) -> str | None:
    """The tier that most requests tried first (attempt 1), or None without traffic."""
    rows = backend.query(
        f"""
        SELECT tier, count() AS firsts
        FROM {backend.database}.verdicts FINAL
        {_where("decided_at", since, tenant, None, "attempt = 1")}
        GROUP BY tier
        ORDER BY firsts DESC, tier
        LIMIT 1
        """
    )
    return str(rows[0]["tier"]) if rows else None


def tier_series(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    tenant: str | None = None,
    tier: str | None = None,
    step_s: int = 60,
) -> list[TierPoint]:
    rows = backend.query(
        f"""
        SELECT
            {_bucket("decided_at", step_s)} AS bucket,
            tier,
            uniqExact(request_id) AS requests,
            uniqExactIf(request_id, NOT accepted AND next_tier IS NOT NULL AND next_tier != tier)
                AS fell_through,
            uniqExactIf(request_id, NOT accepted AND next_tier IS NULL) AS exhausted,
            countIf(called) AS calls,
            sum(cost_usd) AS spent_usd,
            sumIf(cost_usd, NOT accepted) AS rejected_spent_usd,
            quantilesIf({QUANTILES})(latency_ms, called) AS latency
        FROM {backend.database}.verdicts FINAL
        {_where("decided_at", since, tenant, tier)}
        GROUP BY bucket, tier
        ORDER BY bucket, tier
        """
    )
    points = []
    for row in rows:
        p50, p95, p99 = _quantiles(row["latency"] if row["calls"] else None)
        points.append(
            TierPoint(
                bucket=_bucket_time(row["bucket"]),
                tier=row["tier"],
                requests=row["requests"],
                fell_through=row["fell_through"],
                exhausted=row["exhausted"],
                calls=row["calls"],
                cost_usd=row["spent_usd"],
                rejected_cost_usd=row["rejected_spent_usd"],
                fallback_rate=row["fell_through"] / row["requests"] if row["requests"] else None,
                p50_ms=p50,
                p95_ms=p95,
                p99_ms=p99,
            )
        )
    return points


def latency_series(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    tenant: str | None = None,
    tier: str | None = None,
    step_s: int = 60,
) -> list[LatencyPoint]:
    reached = [f"has(tiers, {sql_string(tier)})"] if tier is not None else []
    rows = backend.query(
        f"""
        SELECT
            {_bucket("completed_at", step_s)} AS bucket,
            count() AS responses_in_bucket,
            quantiles({QUANTILES})(latency_ms) AS latency
        FROM {backend.database}.responses FINAL
        {_where("completed_at", since, tenant, None, "status != 'invalid'", *reached)}
        GROUP BY bucket
        ORDER BY bucket
        """
    )
    points = []
    for row in rows:
        p50, p95, p99 = _quantiles(row["latency"])
        points.append(
            LatencyPoint(
                bucket=_bucket_time(row["bucket"]),
                responses=row["responses_in_bucket"],
                p50_ms=p50,
                p95_ms=p95,
                p99_ms=p99,
            )
        )
    return points


def fallback_type_series(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    tenant: str | None = None,
    tier: str | None = None,
    step_s: int = 60,
) -> list[FallbackTypePoint]:
    rows = backend.query(
        f"""
        SELECT
            {_bucket("decided_at", step_s)} AS bucket,
            fallback_type,
            count() AS rejections
        FROM {backend.database}.verdicts FINAL
        {_where("decided_at", since, tenant, tier, "NOT accepted", "fallback_type IS NOT NULL")}
        GROUP BY bucket, fallback_type
        ORDER BY bucket, fallback_type
        """
    )
    return [
        FallbackTypePoint(
            bucket=_bucket_time(row["bucket"]),
            fallback_type=row["fallback_type"],
            rejections=row["rejections"],
        )
        for row in rows
    ]


def counterfactual_series(
    backend: AnalyticsBackend,
    primary_tier: str,
    since: datetime | None = None,
    tenant: str | None = None,
    step_s: int = 60,
) -> list[CounterfactualPoint]:
    """Per bucket: real spend (every attempt) against the primary's own, and
    unavailable responses against the requests the primary did not accept."""
    database = backend.database
    primary = sql_string(primary_tier)
    spend = backend.query(
        f"""
        SELECT
            {_bucket("decided_at", step_s)} AS bucket,
            sum(cost_usd) AS spent_usd,
            sumIf(cost_usd, tier = {primary}) AS primary_spent_usd,
            uniqExactIf(request_id, tier = {primary} AND NOT accepted) AS primary_failed
        FROM {database}.verdicts FINAL
        {_where("decided_at", since, tenant, None)}
        GROUP BY bucket
        """
    )
    failures = backend.query(
        f"""
        SELECT {_bucket("completed_at", step_s)} AS bucket, count() AS unavailable_responses
        FROM {database}.responses FINAL
        {_where("completed_at", since, tenant, None, "status = 'unavailable'")}
        GROUP BY bucket
        """
    )
    buckets: dict[datetime, dict[str, Any]] = {}
    empty = {"spent_usd": 0.0, "primary_spent_usd": 0.0, "primary_failed": 0}
    for row in spend:
        buckets[_bucket_time(row["bucket"])] = {**row, "unavailable_responses": 0}
    for row in failures:
        moment = _bucket_time(row["bucket"])
        buckets.setdefault(moment, dict(empty))["unavailable_responses"] = row[
            "unavailable_responses"
        ]
    return [
        CounterfactualPoint(
            bucket=moment,
            cost_usd=row["spent_usd"],
            primary_only_cost_usd=row["primary_spent_usd"],
            unavailable=row.get("unavailable_responses", 0),
            primary_only_failed=row["primary_failed"],
        )
        for moment, row in sorted(buckets.items())
    ]


# ------------------------------------------------------------- helpers ----


def _bucket(column: str, step_s: int) -> str:
    return f"toStartOfInterval({column}, INTERVAL {int(step_s)} SECOND)"


def _where(
    column: str,
    since: datetime | None,
    tenant: str | None,
    tier: str | None,
    *conditions: str,
) -> str:
    clauses = list(conditions)
    if since is not None:
        clauses.append(
            f"{column} >= toDateTime64({sql_string(clickhouse_datetime(since))}, 3, 'UTC')"
        )
    if tenant is not None:
        clauses.append(f"tenant = {sql_string(tenant)}")
    if tier is not None:
        clauses.append(f"tier = {sql_string(tier)}")
    return "WHERE " + " AND ".join(clauses) if clauses else ""


def _quantiles(values: list[Any] | None) -> tuple[float | None, float | None, float | None]:
    p50, p95, p99 = (
        None if value is None else float(value) for value in (values or [None, None, None])
    )
    return p50, p95, p99


def _bucket_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)
