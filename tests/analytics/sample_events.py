"""A small, hand-countable set of verdicts and responses (see test_queries.py).

r1  primary accepts                                        served, deadline met
r2  primary timeout -> backup accepts                      served, deadline missed
r3  primary low_confidence -> backup unsafe -> local ok    served, deadline met
r4  primary circuit_open (skipped) -> backup over_budget   unavailable
r5  (never routed)                                         invalid
r6  primary timeout -> backup accepts, one minute later    served, no deadline
r0  primary accepts, two hours earlier (outside WINDOW_START)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analytics.backend import AnalyticsBackend
from analytics.rows import RESPONSES_TABLE, VERDICTS_TABLE, response_row, verdict_row
from schemas.events import Response, Trigger, Verdict, fallback_type_of

START = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
WINDOW_START = START - timedelta(hours=1)


def verdict(
    request_id: str,
    attempt: int,
    tier: str,
    *,
    accepted: bool,
    latency_ms: float,
    cost_usd: float,
    trigger: Trigger | None = None,
    next_tier: str | None = None,
    called: bool = True,
    at: datetime = START,
) -> Verdict:
    return Verdict(
        request_id=request_id,
        tenant="acme",
        attempt=attempt,
        tier=tier,
        model=f"{tier}-model" if called else None,
        called=called,
        accepted=accepted,
        trigger=trigger,
        fallback_type=fallback_type_of(trigger) if trigger else None,
        reasons=[f"{trigger.value} on {tier}"] if trigger else [],
        next_tier=next_tier,
        latency_ms=latency_ms,
        queue_wait_ms=1.0,
        tokens_in=10 if called else 0,
        tokens_out=5 if called else 0,
        cost_usd=cost_usd,
        confidence=0.9 if accepted else None,
        safety_score=None,
        region="eu",
        decided_at=at + timedelta(seconds=attempt),
    )


def response(
    request_id: str,
    status: str,
    *,
    served_by: str | None,
    latency_ms: float,
    cost_usd: float,
    deadline_ms: int | None = None,
    within_deadline: bool | None = None,
    attempts: list[Verdict] | None = None,
    at: datetime = START,
) -> Response:
    return Response.model_validate(
        {
            "request_id": request_id,
            "tenant": "acme",
            "status": status,
            "served_by": served_by,
            "model": f"{served_by}-model" if served_by else None,
            "output": {"text": f"answer to {request_id}"} if served_by else None,
            "message": None if status == "served" else "Unable to generate reliable response.",
            "latency_ms": latency_ms,
            "cost_usd": cost_usd,
            "deadline_ms": deadline_ms,
            "within_deadline": within_deadline,
            "attempts": [v.summary() for v in attempts or []],
            "created_at": at,
            "completed_at": at + timedelta(seconds=10),
        }
    )


def sample_verdicts() -> list[Verdict]:
    later = START + timedelta(minutes=1)
    return [
        verdict("r1", 1, "primary", accepted=True, latency_ms=100, cost_usd=0.01),
        verdict("r2", 1, "primary", accepted=False, latency_ms=1500, cost_usd=0.0,
                trigger=Trigger.TIMEOUT, next_tier="backup"),
        verdict("r2", 2, "backup", accepted=True, latency_ms=300, cost_usd=0.002),
        verdict("r3", 1, "primary", accepted=False, latency_ms=200, cost_usd=0.01,
                trigger=Trigger.LOW_CONFIDENCE, next_tier="backup"),
        verdict("r3", 2, "backup", accepted=False, latency_ms=400, cost_usd=0.002,
                trigger=Trigger.UNSAFE, next_tier="local"),
        verdict("r3", 3, "local", accepted=True, latency_ms=50, cost_usd=0.0),
        verdict("r4", 1, "primary", accepted=False, latency_ms=0, cost_usd=0.0,
                trigger=Trigger.CIRCUIT_OPEN, next_tier="backup", called=False),
        verdict("r4", 2, "backup", accepted=False, latency_ms=0, cost_usd=0.0,
                trigger=Trigger.OVER_BUDGET, called=False),
        verdict("r6", 1, "primary", accepted=False, latency_ms=1500, cost_usd=0.0,
                trigger=Trigger.TIMEOUT, next_tier="backup", at=later),
        verdict("r6", 2, "backup", accepted=True, latency_ms=250, cost_usd=0.002, at=later),
        verdict("r0", 1, "primary", accepted=True, latency_ms=90, cost_usd=0.01,
                at=START - timedelta(hours=2)),
    ]  # fmt: skip


def sample_responses() -> list[Response]:
    attempts: dict[str, list[Verdict]] = {}
    for v in sample_verdicts():
        attempts.setdefault(v.request_id, []).append(v)
    return [
        response("r1", "served", served_by="primary", latency_ms=110, cost_usd=0.01,
                 deadline_ms=1000, within_deadline=True, attempts=attempts["r1"]),
        response("r2", "served", served_by="backup", latency_ms=1820, cost_usd=0.002,
                 deadline_ms=1000, within_deadline=False, attempts=attempts["r2"]),
        response("r3", "served", served_by="local", latency_ms=700, cost_usd=0.012,
                 deadline_ms=2000, within_deadline=True, attempts=attempts["r3"]),
        response("r4", "unavailable", served_by=None, latency_ms=5, cost_usd=0.0,
                 attempts=attempts["r4"]),
        response("r5", "invalid", served_by=None, latency_ms=0, cost_usd=0.0),
        response("r6", "served", served_by="backup", latency_ms=1760, cost_usd=0.002,
                 attempts=attempts["r6"], at=START + timedelta(minutes=1)),
        response("r0", "served", served_by="primary", latency_ms=95, cost_usd=0.01,
                 attempts=attempts["r0"], at=START - timedelta(hours=2)),
    ]  # fmt: skip


def load_sample(backend: AnalyticsBackend, copies: int = 1) -> None:
    """Insert the sample `copies` times, each copy a separate INSERT (as a replay would be)."""
    for _ in range(copies):
        backend.insert_rows(VERDICTS_TABLE, [verdict_row(v) for v in sample_verdicts()])
        backend.insert_rows(RESPONSES_TABLE, [response_row(r) for r in sample_responses()])
