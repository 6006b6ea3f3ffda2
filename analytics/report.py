"""One fallback report: every figure of the query library in one JSON-able model.

`build_report` blocks (run it on the sink's executor: `await sink.run(build_report)`);
the worker can send the `Report` over HTTP as `report.model_dump_json()` and
the CLI prints it with `render_report`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.table import Table

from analytics.backend import AnalyticsBackend
from analytics.queries import (
    CostSummary,
    Counterfactual,
    FallbackTypeRejections,
    LatencyQuantiles,
    OutcomeCounts,
    SlaCompliance,
    TriggerRejections,
    cost_summary,
    counterfactual,
    end_to_end_latency,
    outcome_counts,
    rejections_by_fallback_type,
    sla_compliance,
    tier_fallback_rates,
    tier_latency,
    top_rejection_triggers,
)

TOP_TRIGGERS = 5


class TierReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    tier: str
    attempts: int
    called: int
    skipped: int
    accepted: int
    rejected: int
    requests: int
    fell_through: int
    exhausted: int
    acceptance_rate: float | None
    fallback_rate: float | None
    exhausted_rate: float | None = None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    cost_usd: float
    rejected_cost_usd: float
    circuit: dict[str, Any] | None = None


class Report(BaseModel):
    model_config = ConfigDict(frozen=True)

    generated_at: datetime
    since: datetime | None
    tenant: str | None = None
    tier: str | None = None
    tiers: list[TierReport]
    outcomes: OutcomeCounts
    cost: CostSummary
    sla: SlaCompliance
    latency: LatencyQuantiles
    top_triggers: list[TriggerRejections]
    fallback_by_type: list[FallbackTypeRejections]
    #: the primary tier alone on the same requests (not computed with a tier filter)
    counterfactual: Counterfactual | None = None


def build_report(
    backend: AnalyticsBackend,
    since: datetime | None = None,
    circuits: dict[str, dict[str, Any]] | None = None,
    *,
    tenant: str | None = None,
    tier: str | None = None,
    primary: str | None = None,
) -> Report:
    """All figures since `since`, for one `tenant` and/or `tier` when given (see
    analytics/queries.py for what the tier filter keeps); `circuits` (tier ->
    breaker snapshot) is shown per tier; `primary` names the first tier for the
    counterfactual (default: the tier most requests try first).

    Tiers named in `circuits` but without traffic in the window still get a row.
    """
    scope: dict[str, Any] = {"tenant": tenant, "tier": tier}
    circuits = {name: state for name, state in (circuits or {}).items() if tier in (None, name)}
    latency_of = {latency.tier: latency for latency in tier_latency(backend, since, **scope)}
    tiers = []
    for fallback in tier_fallback_rates(backend, since, **scope):
        latency = latency_of.get(fallback.tier)
        tiers.append(
            TierReport(
                **fallback.model_dump(),
                p50_ms=latency.p50_ms if latency else None,
                p95_ms=latency.p95_ms if latency else None,
                p99_ms=latency.p99_ms if latency else None,
                circuit=circuits.get(fallback.tier),
            )
        )
    seen = {tier.tier for tier in tiers}
    for name, circuit in circuits.items():
        if name not in seen:
            tiers.append(_idle_tier(name, circuit))
    return Report(
        generated_at=datetime.now(UTC),
        since=since,
        tenant=tenant,
        tier=tier,
        tiers=tiers,
        outcomes=outcome_counts(backend, since, **scope),
        cost=cost_summary(backend, since, **scope),
        sla=sla_compliance(backend, since, **scope),
        latency=end_to_end_latency(backend, since, **scope),
        top_triggers=top_rejection_triggers(backend, since, TOP_TRIGGERS, **scope),
        fallback_by_type=rejections_by_fallback_type(backend, since, **scope),
        # Per tier it would mean nothing: the counterfactual is about every request.
        counterfactual=None
        if tier is not None
        else counterfactual(backend, since, primary=primary, tenant=tenant),
    )


def _idle_tier(name: str, circuit: dict[str, Any]) -> TierReport:
    return TierReport(
        tier=name,
        attempts=0,
        called=0,
        skipped=0,
        accepted=0,
        rejected=0,
        requests=0,
        fell_through=0,
        exhausted=0,
        acceptance_rate=None,
        fallback_rate=None,
        exhausted_rate=None,
        p50_ms=None,
        p95_ms=None,
        p99_ms=None,
        cost_usd=0.0,
        rejected_cost_usd=0.0,
        circuit=circuit,
    )


# ------------------------------------------------------------ rendering ----


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _circuit_state(circuit: dict[str, Any] | None) -> str:
    if circuit is None:
        return "-"
    return str(circuit.get("state", "?"))


def _scope_line(report: Report) -> str:
    parts = [f"since {report.since:%Y-%m-%d %H:%M:%S} UTC" if report.since else "all time"]
    if report.tenant is not None:
        parts.append(f"tenant {report.tenant}")
    if report.tier is not None:
        parts.append(f"requests that reached tier {report.tier}")
    return ", ".join(parts)


def render_report(report: Report, console: Console) -> None:
    console.print(f"[bold]Model fallback report[/bold] ({_scope_line(report)})")

    tiers = Table(
        title="Tiers",
        caption="of the requests reaching a tier: fallback = went on to a later tier, "
        "exhausted = ended unavailable there",
    )
    columns = ("tier", "attempts", "accepted", "acceptance", "fallback", "exhausted", "skipped")
    for column in columns:
        tiers.add_column(column, justify="left" if column == "tier" else "right")
    for column in ("p50 ms", "p95 ms", "p99 ms", "cost", "circuit"):
        tiers.add_column(column, justify="right")
    for tier in report.tiers:
        tiers.add_row(
            tier.tier,
            str(tier.attempts),
            str(tier.accepted),
            _percent(tier.acceptance_rate),
            _percent(tier.fallback_rate),
            _percent(tier.exhausted_rate),
            str(tier.skipped),
            _ms(tier.p50_ms),
            _ms(tier.p95_ms),
            _ms(tier.p99_ms),
            _usd(tier.cost_usd),
            _circuit_state(tier.circuit),
        )
    console.print(tiers)

    overall = Table(title="Overall", show_header=False)
    overall.add_column("figure")
    overall.add_column("value", justify="right")
    outcomes, cost, sla, latency = report.outcomes, report.cost, report.sla, report.latency
    overall.add_row("requests", str(outcomes.requests))
    overall.add_row("served", str(outcomes.served))
    overall.add_row("unavailable", str(outcomes.unavailable))
    overall.add_row("invalid", str(outcomes.invalid))
    overall.add_row("cost per served request", _usd(cost.cost_per_served_request_usd))
    overall.add_row("cost on rejected attempts", _usd(cost.rejected_attempts_cost_usd))
    overall.add_row("total cost", _usd(cost.total_cost_usd))
    overall.add_row(
        "SLA compliance",
        f"{_percent(sla.compliance)} ({sla.met_deadline}/{sla.with_deadline} in deadline)",
    )
    overall.add_row(
        "latency p50/p95/p99 ms",
        f"{_ms(latency.p50_ms)} / {_ms(latency.p95_ms)} / {_ms(latency.p99_ms)}",
    )
    console.print(overall)

    triggers = Table(title="Top rejection triggers")
    for column in ("trigger", "type", "rejections", "share", "fell through", "cost"):
        triggers.add_column(column, justify="left" if column in {"trigger", "type"} else "right")
    for trigger in report.top_triggers:
        triggers.add_row(
            trigger.trigger,
            trigger.fallback_type or "-",
            str(trigger.rejections),
            _percent(trigger.share),
            str(trigger.fell_through),
            _usd(trigger.cost_usd),
        )
    console.print(triggers)

    by_type = Table(title="Fallback by type")
    for column in ("type", "rejections", "share", "requests", "fell through", "cost"):
        by_type.add_column(column, justify="left" if column == "type" else "right")
    for row in report.fallback_by_type:
        by_type.add_row(
            row.fallback_type,
            str(row.rejections),
            _percent(row.share),
            str(row.requests),
            str(row.fell_through),
            _usd(row.cost_usd),
        )
    console.print(by_type)

    if report.counterfactual is not None:
        render_counterfactual(report.counterfactual, report.cost, console)


def _share(part: int, whole: int) -> str:
    return f"{part} ({_percent(part / whole if whole else None)})"


def render_counterfactual(without: Counterfactual, cost: CostSummary, console: Console) -> None:
    """Real figures next to the primary tier alone on the same requests."""
    table = Table(
        title=f"Without fallback: every request to {without.primary} only",
        caption="requests that never reached the primary (circuit open, policy, budget, "
        "routed elsewhere) count as failed, at no cost",
    )
    table.add_column("figure")
    table.add_column("with fallback", justify="right")
    table.add_column(f"{without.primary} only", justify="right")
    table.add_row(
        "served",
        _share(without.actual_served, without.requests),
        _share(without.primary_served, without.requests),
    )
    table.add_row(
        "failed",
        _share(without.requests - without.actual_served, without.requests),
        _share(without.would_fail, without.requests),
    )
    table.add_row("  rejected by the primary", "-", str(without.rejected_by_primary))
    table.add_row("  never reached the primary", "-", str(without.never_reached_primary))
    for failure in without.failures:
        kind = failure.fallback_type or "-"
        table.add_row(f"  because: {failure.trigger} ({kind})", "-", str(failure.requests))
    table.add_row("spend", _usd(without.actual_cost_usd), _usd(without.primary_only_cost_usd))
    table.add_row("  on rejected attempts", _usd(cost.rejected_attempts_cost_usd), "-")
    table.add_row("cost of fallback", _usd(without.extra_cost_usd), "-")
    console.print(table)
