"""The query library: fallback, SLA, latency and cost figures over a time window.

Every function takes a backend and `since` (None = all time; `minutes_ago(n)`
for the last n minutes) and returns small pydantic models.  The SQL is the
same on chDB and a ClickHouse server.

Filters (keyword `tenant=`, `tier=`; the per-minute series take `tier=` only,
their views keep no tenant): on verdicts, `tier` keeps that tier's attempts; on
responses, it keeps the requests that reached the tier (`has(tiers, ...)`).

Duplicates: a verdict or response replayed after a crash is a second row with
the same key until ReplacingMergeTree merges it away, so every query on the
raw tables reads them with `FINAL`.  The per-minute views count with
`uniqExact` on the key (duplicates do not change counts) but their sums and
quantiles are at-least-once; see `migrations/0002_create_per_minute_views.sql`.

Windows: verdicts by `decided_at`, responses by `completed_at`, per-minute
series by the minute bucket holding `since`.

Aliases never reuse a column name: ClickHouse resolves an alias before a
column, so `countIf(accepted) AS accepted` would turn a later `NOT accepted`
into an aggregate of an aggregate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field

from analytics.backend import AnalyticsBackend
from analytics.rows import clickhouse_datetime

QUANTILES = "0.5, 0.95, 0.99"


class Figures(BaseModel):
    model_config = ConfigDict(frozen=True)


class TierFallback(Figures):
    """How a tier treated the requests that reached it.

    `acceptance_rate` = accepted / attempts (skips count as attempts);
    `fallback_rate` = requests that fell through from this tier to a later
    tier / requests that reached it; `exhausted` = requests rejected here with
    no tier left (they ended unavailable here), `exhausted_rate` = exhausted /
    requests that reached it.  So per tier, of the requests reaching it, the
    shares served, fallen through and exhausted add up to 100%.
    """

    tier: str
    attempts: int
    called: int
    skipped: int
    accepted: int
    rejected: int
    requests: int
    fell_through: int
    exhausted: int
    cost_usd: float
    rejected_cost_usd: float
    acceptance_rate: float | None
    fallback_rate: float | None
    exhausted_rate: float | None


class LatencyQuantiles(Figures):
    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class TierLatency(LatencyQuantiles):
    """Latency of the model calls of one tier (skipped tiers have no latency)."""

    tier: str


class SlaCompliance(Figures):
    """Responses answered within their deadline, among those that had one (invalid excluded).

    `compliance` counts any answer in time (served or unavailable);
    `served_compliance` counts only served answers in time.
    """

    with_deadline: int
    met_deadline: int
    served_within_deadline: int
    compliance: float | None
    served_compliance: float | None


class CostSummary(Figures):
    """`cost_per_served_request_usd` = everything spent (all responses) / served requests."""

    total_cost_usd: float
    served: int
    served_cost_usd: float
    cost_per_served_request_usd: float | None
    rejected_attempts_cost_usd: float


class OutcomeCounts(Figures):
    requests: int
    served: int
    unavailable: int
    invalid: int


class TriggerRejections(Figures):
    """Rejections with one trigger; `share` of all rejections in the window."""

    trigger: str
    fallback_type: str | None
    rejections: int
    requests: int
    fell_through: int
    cost_usd: float
    share: float


class FallbackTypeRejections(Figures):
    fallback_type: str
    rejections: int
    requests: int
    fell_through: int
    cost_usd: float
    share: float


class PrimaryFailure(Figures):
    """Requests the primary alone would not have served, by the primary's last verdict.

    `trigger` is that verdict's trigger; `not_routed` when the primary has no
    verdict for the request (the router sent it elsewhere, e.g. a restricted tier).
    `called` is False for skips (circuit open, policy, budget): nothing was spent."""

    trigger: str
    fallback_type: str | None
    called: bool
    requests: int


class Counterfactual(Figures):
    """The same workload had every request gone to the primary tier only (no fallback).

    Read from the primary's own verdicts for the requests answered in the window
    (invalid ones never ran): a request the primary accepted would have been
    served as it was; any other would have failed.  That includes the requests
    that never reached the primary: skipped because its circuit was open (it was
    failing: without fallback they fail at once), or by policy or budget (the
    primary may not serve them at all), or routed elsewhere.  They cost nothing.
    `primary_only_cost_usd` sums the primary's attempts (its own retries
    included); `actual_cost_usd` sums what the responses spent.
    """

    primary: str
    requests: int
    actual_served: int
    actual_cost_usd: float
    primary_served: int
    would_fail: int
    rejected_by_primary: int
    never_reached_primary: int
    primary_only_cost_usd: float
    failures: list[PrimaryFailure]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def extra_cost_usd(self) -> float:
        """What fallback cost on top of the primary alone (negative: it saved money)."""
        return self.actual_cost_usd - self.primary_only_cost_usd


class TierMinute(Figures):
    """One tier in one minute, from the `verdicts_per_minute` view."""

    minute: datetime
    tier: str
    attempts: int
    called: int
    accepted: int
    rejected: int
    cost_usd: float
    rejected_cost_usd: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class OutcomeMinute(Figures):
    """One response status in one minute, from the `responses_per_minute` view."""

    minute: datetime
    status: str
    requests: int
    with_deadline: int
    met_deadline: int
    cost_usd: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


def minutes_ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


def sql_string(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _where(column: str, since: datetime | None, *conditions: str) -> str:
    clauses = list(conditions)
    if since is not None:
        clauses.append(
            f"{column} >= toDateTime64({sql_string(clickhouse_datetime(since))}, 3, 'UTC')"
        )
    return "WHERE " + " AND ".join(clauses) if clauses else ""


def _scope(tenant: str | None, tier: str | None, *, responses: bool = False) -> list[str]:
    """WHERE conditions for the tenant and tier filters (see the module docstring)."""
    conditions = []
    if tenant is not None:
        conditions.append(f"tenant = {sql_string(tenant)}")
    if tier is not None:
        conditions.append(
            f"has(tiers, {sql_string(tier)})" if responses else f"tier = {sql_string(tier)}"
        )
    return conditions


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _quantiles(values: list[Any] | None) -> tuple[float | None, float | None, float | None]:
    values = values or [None, None, None]
    p50, p95, p99 = (None if value is None else float(value) for value in values)
    return p50, p95, p99


def _minute(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _minute_row(row: dict[str, Any]) -> dict[str, Any]:
    """A per-minute view row with its minute parsed and its latency quantiles spread out."""
    p50, p95, p99 = _quantiles(row.pop("latency"))
    return {**row, "minute": _minute(row["minute"]), "p50_ms": p50, "p95_ms": p95, "p99_ms": p99}


# ------------------------------------------------------------- per tier ----


def tier_fallback_rates(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    *,
    tenant: str | None = None,
    tier: str | None = None,
) -> list[TierFallback]:
    """Per tier, in the order requests usually reach them (mean attempt number)."""
    rows = backend.query(
        f"""
        SELECT
            tier,
            count() AS attempts,
            countIf(called) AS calls,
            countIf(NOT called) AS skips,
            countIf(accepted) AS accepts,
            countIf(NOT accepted) AS rejections,
            uniqExact(request_id) AS requests,
            uniqExactIf(request_id, NOT accepted AND next_tier IS NOT NULL AND next_tier != tier)
                AS fell_through,
            uniqExactIf(request_id, NOT accepted AND next_tier IS NULL) AS exhausted,
            sum(cost_usd) AS spent_usd,
            sumIf(cost_usd, NOT accepted) AS rejected_spent_usd,
            avg(attempt) AS mean_attempt
        FROM {backend.database}.verdicts FINAL
        {_where("decided_at", since, *_scope(tenant, tier))}
        GROUP BY tier
        ORDER BY mean_attempt, tier
        """
    )
    return [
        TierFallback(
            tier=row["tier"],
            attempts=row["attempts"],
            called=row["calls"],
            skipped=row["skips"],
            accepted=row["accepts"],
            rejected=row["rejections"],
            requests=row["requests"],
            fell_through=row["fell_through"],
            exhausted=row["exhausted"],
            cost_usd=row["spent_usd"],
            rejected_cost_usd=row["rejected_spent_usd"],
            acceptance_rate=_ratio(row["accepts"], row["attempts"]),
            fallback_rate=_ratio(row["fell_through"], row["requests"]),
            exhausted_rate=_ratio(row["exhausted"], row["requests"]),
        )
        for row in rows
    ]


def tier_latency(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    *,
    tenant: str | None = None,
    tier: str | None = None,
) -> list[TierLatency]:
    """p50/p95/p99 of model-call latency per tier (called attempts only)."""
    rows = backend.query(
        f"""
        SELECT tier, count() AS calls, quantiles({QUANTILES})(latency_ms) AS latency
        FROM {backend.database}.verdicts FINAL
        {_where("decided_at", since, "called", *_scope(tenant, tier))}
        GROUP BY tier
        ORDER BY tier
        """
    )
    latencies = []
    for row in rows:
        p50, p95, p99 = _quantiles(row["latency"])
        latencies.append(
            TierLatency(tier=row["tier"], count=row["calls"], p50_ms=p50, p95_ms=p95, p99_ms=p99)
        )
    return latencies


# -------------------------------------------------------------- overall ----


def end_to_end_latency(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    *,
    tenant: str | None = None,
    tier: str | None = None,
) -> LatencyQuantiles:
    """Request latency from the responses, served and unavailable (invalid never ran)."""
    where = _where(
        "completed_at", since, "status != 'invalid'", *_scope(tenant, tier, responses=True)
    )
    rows = backend.query(
        f"""
        SELECT count() AS responses, quantiles({QUANTILES})(latency_ms) AS latency
        FROM {backend.database}.responses FINAL
        {where}
        """
    )
    row = rows[0]
    p50, p95, p99 = _quantiles(row["latency"])
    return LatencyQuantiles(count=row["responses"], p50_ms=p50, p95_ms=p95, p99_ms=p99)


def sla_compliance(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    *,
    tenant: str | None = None,
    tier: str | None = None,
) -> SlaCompliance:
    met = "coalesce(within_deadline, latency_ms <= deadline_ms)"
    where = _where(
        "completed_at",
        since,
        "status != 'invalid'",
        "deadline_ms IS NOT NULL",
        *_scope(tenant, tier, responses=True),
    )
    rows = backend.query(
        f"""
        SELECT
            count() AS with_deadline,
            countIf({met}) AS met_deadline,
            countIf({met} AND status = 'served') AS served_within_deadline
        FROM {backend.database}.responses FINAL
        {where}
        """
    )
    row = rows[0]
    return SlaCompliance(
        with_deadline=row["with_deadline"],
        met_deadline=row["met_deadline"],
        served_within_deadline=row["served_within_deadline"],
        compliance=_ratio(row["met_deadline"], row["with_deadline"]),
        served_compliance=_ratio(row["served_within_deadline"], row["with_deadline"]),
    )


def cost_summary(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    *,
    tenant: str | None = None,
    tier: str | None = None,
) -> CostSummary:
    database = backend.database
    spent = backend.query(
        f"""
        SELECT
            sum(cost_usd) AS total_cost_usd,
            countIf(status = 'served') AS served,
            sumIf(cost_usd, status = 'served') AS served_cost_usd
        FROM {database}.responses FINAL
        {_where("completed_at", since, *_scope(tenant, tier, responses=True))}
        """
    )[0]
    rejected = backend.query(
        f"""
        SELECT sum(cost_usd) AS rejected_cost_usd
        FROM {database}.verdicts FINAL
        {_where("decided_at", since, "NOT accepted", *_scope(tenant, tier))}
        """
    )[0]
    return CostSummary(
        total_cost_usd=spent["total_cost_usd"],
        served=spent["served"],
        served_cost_usd=spent["served_cost_usd"],
        cost_per_served_request_usd=_ratio(spent["total_cost_usd"], spent["served"]),
        rejected_attempts_cost_usd=rejected["rejected_cost_usd"],
    )


def outcome_counts(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    *,
    tenant: str | None = None,
    tier: str | None = None,
) -> OutcomeCounts:
    row = backend.query(
        f"""
        SELECT
            count() AS requests,
            countIf(status = 'served') AS served,
            countIf(status = 'unavailable') AS unavailable,
            countIf(status = 'invalid') AS invalid
        FROM {backend.database}.responses FINAL
        {_where("completed_at", since, *_scope(tenant, tier, responses=True))}
        """
    )[0]
    return OutcomeCounts(**row)


# ------------------------------------------------------------- triggers ----


def rejections_by_trigger(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    limit: int | None = None,
    *,
    tenant: str | None = None,
    tier: str | None = None,
) -> list[TriggerRejections]:
    """Rejections per trigger, most frequent first; `limit` keeps the top ones."""
    rows = backend.query(
        f"""
        SELECT
            trigger,
            any(fallback_type) AS type_of_trigger,
            count() AS rejections,
            uniqExact(request_id) AS requests,
            countIf(next_tier IS NOT NULL AND next_tier != tier) AS fell_through,
            sum(cost_usd) AS spent_usd
        FROM {backend.database}.verdicts FINAL
        {_where("decided_at", since, "NOT accepted", "trigger IS NOT NULL", *_scope(tenant, tier))}
        GROUP BY trigger
        ORDER BY rejections DESC, trigger
        """
    )
    total = sum(row["rejections"] for row in rows)
    triggers = [
        TriggerRejections(
            trigger=row["trigger"],
            fallback_type=row["type_of_trigger"],
            rejections=row["rejections"],
            requests=row["requests"],
            fell_through=row["fell_through"],
            cost_usd=row["spent_usd"],
            share=row["rejections"] / total,
        )
        for row in rows
    ]
    return triggers if limit is None else triggers[:limit]


def top_rejection_triggers(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    limit: int = 5,
    *,
    tenant: str | None = None,
    tier: str | None = None,
) -> list[TriggerRejections]:
    return rejections_by_trigger(backend, since, limit, tenant=tenant, tier=tier)


def rejections_by_fallback_type(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    *,
    tenant: str | None = None,
    tier: str | None = None,
) -> list[FallbackTypeRejections]:
    """Rejections per kind of fallback (reliability, quality, cost, latency, policy)."""
    where = _where(
        "decided_at", since, "NOT accepted", "fallback_type IS NOT NULL", *_scope(tenant, tier)
    )
    rows = backend.query(
        f"""
        SELECT
            fallback_type,
            count() AS rejections,
            uniqExact(request_id) AS requests,
            countIf(next_tier IS NOT NULL AND next_tier != tier) AS fell_through,
            sum(cost_usd) AS spent_usd
        FROM {backend.database}.verdicts FINAL
        {where}
        GROUP BY fallback_type
        ORDER BY rejections DESC, fallback_type
        """
    )
    total = sum(row["rejections"] for row in rows)
    return [
        FallbackTypeRejections(
            fallback_type=row["fallback_type"],
            rejections=row["rejections"],
            requests=row["requests"],
            fell_through=row["fell_through"],
            cost_usd=row["spent_usd"],
            share=row["rejections"] / total,
        )
        for row in rows
    ]


# -------------------------------------------------------- counterfactual ----


def primary_tier(backend: AnalyticsBackend, since: datetime | None = None) -> str | None:
    """The tier most requests try first, when the caller does not say (config.tiers[0])."""
    rows = backend.query(
        f"""
        SELECT tier, count() AS firsts
        FROM {backend.database}.verdicts FINAL
        {_where("decided_at", since, "attempt = 1")}
        GROUP BY tier
        ORDER BY firsts DESC, tier
        LIMIT 1
        """
    )
    return str(rows[0]["tier"]) if rows else None


def _per_request_primary_sql(
    backend: AnalyticsBackend, primary: str, since: datetime | None, tenant: str | None
) -> str:
    """One row per answered request in the window, with the primary's verdicts folded."""
    database = backend.database
    answered = _where("completed_at", since, "status != 'invalid'", *_scope(tenant, None))
    return f"""
        SELECT
            r.request_id AS request_id,
            r.status AS status,
            r.cost_usd AS response_cost_usd,
            p.request_id != '' AS has_primary_verdict,
            p.accepted_any AS primary_accepted,
            p.called_any AS primary_called,
            p.spent_usd AS primary_cost_usd,
            p.last_trigger AS primary_trigger,
            p.last_type AS primary_type
        FROM (
            SELECT request_id, status, cost_usd FROM {database}.responses FINAL {answered}
        ) AS r
        LEFT JOIN (
            SELECT
                request_id,
                max(accepted) AS accepted_any,
                max(called) AS called_any,
                sum(cost_usd) AS spent_usd,
                argMax(trigger, attempt) AS last_trigger,
                argMax(fallback_type, attempt) AS last_type
            FROM {database}.verdicts FINAL
            WHERE tier = {sql_string(primary)}
                AND request_id IN (SELECT request_id FROM {database}.responses FINAL {answered})
            GROUP BY request_id
        ) AS p ON p.request_id = r.request_id
    """


def counterfactual(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    *,
    primary: str | None = None,
    tenant: str | None = None,
) -> Counterfactual | None:
    """Spend and failures with the primary tier alone; None when nothing ran."""
    primary = primary or primary_tier(backend, since)
    if primary is None:
        return None
    per_request = _per_request_primary_sql(backend, primary, since, tenant)
    totals = backend.query(
        f"""
        SELECT
            count() AS requests,
            countIf(status = 'served') AS actual_served,
            sum(response_cost_usd) AS actual_cost_usd,
            countIf(primary_accepted) AS primary_served,
            countIf(primary_called AND NOT primary_accepted) AS rejected_by_primary,
            countIf(NOT primary_called) AS never_reached_primary,
            sum(primary_cost_usd) AS primary_only_cost_usd
        FROM ({per_request})
        """
    )[0]
    failures = backend.query(
        f"""
        SELECT
            if(has_primary_verdict, ifNull(primary_trigger, 'unknown'), 'not_routed')
                AS reason,
            any(if(has_primary_verdict, primary_type, NULL)) AS reason_type,
            any(primary_called) AS reason_called,
            count() AS failed
        FROM ({per_request})
        WHERE NOT primary_accepted
        GROUP BY reason
        ORDER BY failed DESC, reason
        """
    )
    return Counterfactual(
        primary=primary,
        requests=totals["requests"],
        actual_served=totals["actual_served"],
        actual_cost_usd=totals["actual_cost_usd"],
        primary_served=totals["primary_served"],
        would_fail=totals["requests"] - totals["primary_served"],
        rejected_by_primary=totals["rejected_by_primary"],
        never_reached_primary=totals["never_reached_primary"],
        primary_only_cost_usd=totals["primary_only_cost_usd"],
        failures=[
            PrimaryFailure(
                trigger=row["reason"],
                fallback_type=row["reason_type"],
                called=bool(row["reason_called"]),
                requests=row["failed"],
            )
            for row in failures
        ],
    )


# ----------------------------------------------------------- per minute ----


def tier_minutes(
    backend: AnalyticsBackend, since: datetime | None = None, tier: str | None = None
) -> list[TierMinute]:
    """Per-minute, per-tier series from the `verdicts_per_minute` view."""
    conditions = [f"tier = {sql_string(tier)}"] if tier is not None else []
    rows = backend.query(
        f"""
        SELECT
            minute,
            tier,
            uniqExactMerge(attempts_state) AS attempts,
            uniqExactIfMerge(called_state) AS called,
            uniqExactIfMerge(accepted_state) AS accepted,
            uniqExactIfMerge(rejected_state) AS rejected,
            sum(cost_usd_sum) AS cost_usd,
            sum(rejected_cost_usd_sum) AS rejected_cost_usd,
            quantilesIfMerge({QUANTILES})(latency_ms_state) AS latency
        FROM {backend.database}.verdicts_per_minute
        {_where("minute", _minute_of(since), *conditions)}
        GROUP BY minute, tier
        ORDER BY minute, tier
        """
    )
    return [TierMinute(**_minute_row(row)) for row in rows]


def outcome_minutes(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    *,
    tenant: str | None = None,
    tier: str | None = None,
) -> list[OutcomeMinute]:
    """Per-minute, per-status series from the `responses_per_minute` view."""
    rows = backend.query(
        f"""
        SELECT
            minute,
            status,
            uniqExactMerge(requests_state) AS requests,
            uniqExactIfMerge(with_deadline_state) AS with_deadline,
            uniqExactIfMerge(met_deadline_state) AS met_deadline,
            sum(cost_usd_sum) AS cost_usd,
            quantilesMerge({QUANTILES})(latency_ms_state) AS latency
        FROM {backend.database}.responses_per_minute
        {_where("minute", _minute_of(since))}
        GROUP BY minute, status
        ORDER BY minute, status
        """
    )
    return [OutcomeMinute(**_minute_row(row)) for row in rows]


def _minute_of(since: datetime | None) -> datetime | None:
    """The start of the minute holding `since`, so its bucket is included."""
    return since.replace(second=0, microsecond=0) if since is not None else None
