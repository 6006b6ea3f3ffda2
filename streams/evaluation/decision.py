"""The fallback decision, pure by construction: values in, decisions and events out.

No Faust, no Kafka, no clock, no breaker, no ledger: the stage passes in what
the decision needs as values (each tier's `CircuitView`, the request tenant's
spend, now) and gets back an `Outcome` saying what must happen: verdicts, the
forward or the final response, breaker events and charges.  The stage applies
them (streams/stages/decision_io.py).  Nothing passed in is changed.

Entry points:

- `route_request`: a new request enters; find the first eligible tier.
- `evaluate_attempt`: a tier answered (or failed); apply the decision rule
  Accept = latency < L and confidence >= Q and safe and within cost and
  policy, then serve, retry on the same tier, or fall to the next tier.
- `call_may_start` / `skipped_call`: a queued call about to start finds its
  tier's circuit open; it becomes an attempt that never reached the model.

Tiers passed over without a call (circuit open, policy, budget, deadline,
context window) get a verdict too, with `called = False` and no cost.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from schemas.events import (
    UNAVAILABLE_MESSAGE,
    Attempt,
    Request,
    Response,
    RoutedRequest,
    Trigger,
    Verdict,
    fallback_type_of,
)
from streams.config import FallbackConfig, TierConfig
from streams.evaluation.budget import expected_tokens, request_over_budget, tier_over_budget
from streams.evaluation.circuit import (
    BreakerEvent,
    CallOutcome,
    CircuitState,
    CircuitView,
    RecordCall,
    ReleaseProbe,
    ReserveProbe,
)
from streams.evaluation.policy import PolicyDecision, decide_policy
from streams.evaluation.quality import run_quality_checks
from streams.evaluation.retries import retry_delay_s
from streams.evaluation.safety import SafetyScorer

#: a tier is worth calling only if at least this share of its timeout is left
MIN_DEADLINE_SHARE = 0.25
#: system failures count against a tier's health; quality rejections do not
HEALTH_FAILURES = frozenset(
    {Trigger.TIMEOUT, Trigger.ERROR, Trigger.RATE_LIMITED, Trigger.TRUNCATED}
)
#: say nothing about the tier's health: never recorded, neither as success nor as failure
NOT_HEALTH = frozenset({Trigger.BAD_REQUEST, Trigger.CIRCUIT_OPEN})
#: after these the request goes to the restricted tier when there is one
RESTRICTED_FALLBACK = frozenset({Trigger.UNSAFE, Trigger.POLICY})
#: never retried on the same tier, whatever the attempt says: the same model fails the same way
NEVER_RETRIED = frozenset({Trigger.CONTEXT_LENGTH, Trigger.POLICY, Trigger.CIRCUIT_OPEN})
#: the reason an attempt skipped at call time carries
QUEUED_BEHIND_OPEN_CIRCUIT = (
    "circuit open when the queued call was due: tier skipped without a call"
)


@dataclass(frozen=True)
class DecisionContext:
    """Everything a decision may consult, as values the stage read just before."""

    config: FallbackConfig
    #: each tier's breaker, advanced to now; a tier without one is always allowed
    circuits: Mapping[str, CircuitView]
    safety: SafetyScorer
    #: what the request's tenant has spent in its current budget window, before this attempt
    tenant_spend_usd: float
    now: datetime
    #: the retry jitter's source (the one input a decision draws from)
    rng: random.Random = field(default_factory=random.Random)


@dataclass(frozen=True)
class Charge:
    """Money an attempt cost its tenant: the stage adds it to the tenant's spend."""

    tenant: str
    usd: float
    charged_at: datetime


@dataclass(frozen=True)
class Outcome:
    """What the stage must do, in order: breaker events and charges, then publish
    the verdicts, then the forward or the response (exactly one of the two)."""

    verdicts: tuple[Verdict, ...] = ()
    forward: RoutedRequest | None = None
    response: Response | None = None
    breaker_events: tuple[BreakerEvent, ...] = ()
    charges: tuple[Charge, ...] = ()


@dataclass(frozen=True)
class Rejection:
    trigger: Trigger
    reasons: list[str]


# ------------------------------------------------------------------ rule ----


def judge_attempt(
    attempt: Attempt, tier: TierConfig, ctx: DecisionContext
) -> tuple[Rejection | None, float | None]:
    """The evaluation layer for one answer: (None, score) means accept.  The safety
    score is returned either way so accepted verdicts carry it too."""
    if attempt.error_trigger is not None:
        reason = attempt.error or attempt.error_trigger.value
        return Rejection(attempt.error_trigger, [reason]), None
    found: list[tuple[Trigger, str]] = []
    rule = tier.accept
    if rule.max_latency_ms is not None and attempt.latency_ms >= rule.max_latency_ms:
        found.append(
            (Trigger.SLOW, f"latency {attempt.latency_ms:.0f} ms >= {rule.max_latency_ms:.0f} ms")
        )
    confidence = effective_confidence(attempt, tier)
    if rule.min_confidence is not None and (confidence is None or confidence < rule.min_confidence):
        shown = "none" if confidence is None else f"{confidence:.3f}"
        found.append((Trigger.LOW_CONFIDENCE, f"confidence {shown} < {rule.min_confidence}"))
    safety_score = None
    if rule.safety:
        result = ctx.safety.score_output(attempt.output)
        safety_score = result.score
        if result.unsafe:
            found.extend((Trigger.UNSAFE, reason) for reason in result.reasons or ["unsafe output"])
    if rule.max_cost_usd is not None and attempt.cost_usd > rule.max_cost_usd:
        found.append(
            (Trigger.OVER_BUDGET, f"cost ${attempt.cost_usd:.6f} > ${rule.max_cost_usd:.6f}")
        )
    for failure in run_quality_checks(rule.quality, attempt.output, attempt.routed.request.input):
        found.append((failure.trigger, failure.reason))
    if not found:
        return None, safety_score
    # Safety outranks everything: an unsafe answer must reach the restricted tier.
    order = [Trigger.UNSAFE, Trigger.SLOW, Trigger.LOW_CONFIDENCE, Trigger.HALLUCINATION]
    found.sort(key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    return Rejection(found[0][0], [reason for _, reason in found]), safety_score


def effective_confidence(attempt: Attempt, tier: TierConfig) -> float | None:
    return attempt.confidence if attempt.confidence is not None else tier.default_confidence


# --------------------------------------------------------------- routing ----


def route_request(
    request: Request, received_at: datetime, ctx: DecisionContext, reply_to: str | None = None
) -> Outcome:
    """A new request: the first eligible tier gets it, or the caller is told at once.
    `reply_to` goes with it to every tier (`RoutedRequest.reply_to`)."""
    input_unsafe = False
    if ctx.config.policy.input_safety:
        input_unsafe = ctx.safety.score_input(request.input).unsafe
    policy = decide_policy(request, ctx.config, input_unsafe=input_unsafe)
    state = RoutedRequest(
        request=request,
        tier=ctx.config.tiers[0].name,
        attempt=1,
        received_at=received_at,
        routed_at=ctx.now,
        restricted=policy.restricted,
        reply_to=reply_to,
    )
    return plan_from(state, 0, policy, ctx, ctx.circuits, ctx.tenant_spend_usd)


def was_called(attempt: Attempt) -> bool:
    """False for an attempt the call stage skipped: the circuit was open when the
    queued call was due (adapters never report `circuit_open`)."""
    return attempt.error_trigger is not Trigger.CIRCUIT_OPEN


def evaluate_attempt(attempt: Attempt, ctx: DecisionContext) -> Outcome:
    routed = attempt.routed
    tier = ctx.config.tier(routed.tier)
    rejection, safety_score = judge_attempt(attempt, tier, ctx)
    events, circuits = health_events(attempt, tier.name, ctx.circuits)
    charges: tuple[Charge, ...] = ()
    if attempt.cost_usd > 0:
        # Charged whether or not the answer is accepted: spend counts rejected attempts too.
        charges = (Charge(routed.request.tenant, attempt.cost_usd, attempt.finished_at),)
    tenant_spend_usd = ctx.tenant_spend_usd + attempt.cost_usd
    if was_called(attempt):
        verdict = called_verdict(attempt, tier, rejection, safety_score, ctx.now)
    else:
        reason = attempt.error or QUEUED_BEHIND_OPEN_CIRCUIT
        verdict = skipped_verdict(
            routed.request, routed.attempt, tier, Trigger.CIRCUIT_OPEN, reason, ctx.now
        ).model_copy(update={"queue_wait_ms": attempt.queue_wait_ms})
    state = routed.model_copy(
        update={
            "history": [*routed.history, verdict.summary()],
            "spent_usd": routed.spent_usd + attempt.cost_usd,
            "attempt": routed.attempt + 1,
        }
    )
    if rejection is None:
        return Outcome(
            verdicts=(verdict,),
            response=served_response(state, attempt, tier, ctx.now),
            breaker_events=events,
            charges=charges,
        )

    retry = retry_on_same_tier(attempt, tier, state, ctx, circuits.get(tier.name))
    if retry is not None:
        forward, retry_events = retry
        return Outcome(
            verdicts=(verdict.model_copy(update={"next_tier": tier.name}),),
            forward=forward,
            breaker_events=events + retry_events,
            charges=charges,
        )

    # With no restricted tier, an unsafe answer is an ordinary quality fallback.
    has_restricted_tier = ctx.config.policy.restricted_tier is not None
    confine = routed.restricted or (
        has_restricted_tier and rejection.trigger in RESTRICTED_FALLBACK
    )
    policy = decide_policy(routed.request, ctx.config, input_unsafe=confine)
    if policy.restricted:
        state = state.model_copy(update={"restricted": True})
    if rejection.trigger is Trigger.CONTEXT_LENGTH:
        # Never below what an earlier, larger tier already proved too small.
        needed = max(state.needs_context_window or 0, (tier.context_window_tokens or 0) + 1)
        state = state.model_copy(update={"needs_context_window": needed})
    start = ctx.config.tiers.index(tier) + 1
    if policy.restricted:
        start = 0  # the restricted tier may rank above the one that failed
    plan = plan_from(
        state, start, policy, ctx, circuits, tenant_spend_usd, exclude=frozenset({tier.name})
    )
    # next_tier: where the request went next (a skipped tier's verdict, or the forward)
    following = plan.verdicts[0].tier if plan.verdicts else None
    if following is None and plan.forward is not None:
        following = plan.forward.tier
    return dataclasses.replace(
        plan,
        verdicts=(verdict.model_copy(update={"next_tier": following}), *plan.verdicts),
        breaker_events=events + plan.breaker_events,
        charges=charges,
    )


def health_events(
    attempt: Attempt, tier: str, circuits: Mapping[str, CircuitView]
) -> tuple[tuple[BreakerEvent, ...], Mapping[str, CircuitView]]:
    """What the attempt tells the tier's breaker, and the views once it is told.

    System failures count against health, other answers for it; an error the
    request itself caused (or a call never made) is not recorded at all, and a
    half-open probe it held is handed back.
    """
    view = circuits.get(tier)
    if view is None:
        return (), circuits
    if attempt.error_trigger in NOT_HEALTH or not attempt.called:
        if view.takes_probe and view.probes_in_flight > 0:
            return (ReleaseProbe(tier),), {**circuits, tier: view.with_probe_released()}
        return (), circuits
    call = CallOutcome(
        success=attempt.error_trigger not in HEALTH_FAILURES,
        latency_ms=attempt.latency_ms,
        timed_out=attempt.error_trigger is Trigger.TIMEOUT,
    )
    return (RecordCall(tier, call),), {**circuits, tier: view.after_call(call)}


def called_verdict(
    attempt: Attempt,
    tier: TierConfig,
    rejection: Rejection | None,
    safety_score: float | None,
    now: datetime,
) -> Verdict:
    routed = attempt.routed
    return Verdict(
        request_id=routed.request.request_id,
        tenant=routed.request.tenant,
        attempt=routed.attempt,
        tier=tier.name,
        model=attempt.model,
        called=attempt.called,
        accepted=rejection is None,
        trigger=None if rejection is None else rejection.trigger,
        fallback_type=None if rejection is None else fallback_type_of(rejection.trigger),
        reasons=[] if rejection is None else rejection.reasons,
        next_tier=None,
        latency_ms=attempt.latency_ms,
        queue_wait_ms=attempt.queue_wait_ms,
        tokens_in=attempt.tokens_in,
        tokens_out=attempt.tokens_out,
        cost_usd=attempt.cost_usd,
        confidence=effective_confidence(attempt, tier),
        safety_score=safety_score,
        region=routed.request.region,
        decided_at=now,
    )


def retry_on_same_tier(
    attempt: Attempt,
    tier: TierConfig,
    state: RoutedRequest,
    ctx: DecisionContext,
    circuit: CircuitView | None,
) -> tuple[RoutedRequest, tuple[BreakerEvent, ...]] | None:
    """The retry (and the probe it takes, half-open), or None when there is none.
    `circuit` is the tier's view once this attempt is recorded."""
    if (
        not attempt.retryable
        or attempt.error_trigger is None
        or attempt.error_trigger in NEVER_RETRIED
    ):
        return None
    retry_after_s = None if attempt.retry_after_ms is None else attempt.retry_after_ms / 1000
    delay_s = retry_delay_s(
        tier.retry,
        state.tier_retry,
        retry_after_s,
        ctx.rng,
        rate_limited=attempt.error_trigger is Trigger.RATE_LIMITED,
    )
    if delay_s is None:
        return None
    not_before = ctx.now + timedelta(seconds=delay_s)
    deadline = request_deadline(state.request)
    if (
        deadline is not None
        and not_before + timedelta(milliseconds=tier.timeout_ms * MIN_DEADLINE_SHARE) > deadline
    ):
        return None
    if circuit is not None and not circuit.allows:
        return None
    retry = state.model_copy(
        update={"tier_retry": state.tier_retry + 1, "not_before": not_before, "routed_at": ctx.now}
    )
    return retry, probe_events(tier.name, circuit)


def probe_events(tier: str, circuit: CircuitView | None) -> tuple[BreakerEvent, ...]:
    """A request sent to a half-open tier holds one of its probe slots."""
    if circuit is not None and circuit.takes_probe:
        return (ReserveProbe(tier),)
    return ()


def request_deadline(request: Request) -> datetime | None:
    if request.deadline_ms is None:
        return None
    return request.created_at + timedelta(milliseconds=request.deadline_ms)


def remaining_ms(request: Request, now: datetime) -> float:
    deadline = request_deadline(request)
    if deadline is None:
        return math.inf
    return (deadline - now).total_seconds() * 1000


def skip_reason(
    tier: TierConfig,
    state: RoutedRequest,
    policy: PolicyDecision,
    ctx: DecisionContext,
    circuit: CircuitView | None,
    tenant_spend_usd: float,
) -> tuple[Trigger, str] | None:
    """Why `tier` must be passed over for this request right now, if it must."""
    if tier.name not in policy.allowed_tiers:
        return Trigger.POLICY, policy.denied.get(tier.name, "not allowed by policy")
    needed = state.needs_context_window
    window = tier.context_window_tokens
    if needed is not None and window is not None and window < needed:
        return (
            Trigger.CONTEXT_LENGTH,
            f"context window {tier.context_window_tokens} tokens < {needed} needed",
        )
    left = remaining_ms(state.request, ctx.now)
    if left < tier.timeout_ms * MIN_DEADLINE_SHARE:
        return Trigger.DEADLINE, f"{max(left, 0):.0f} ms left before the deadline"
    request = state.request
    # Token-priced (LLM) tiers would look free without an estimate of the call's tokens.
    tokens_in, tokens_out = expected_tokens(request.input, request.params)
    reason = request_over_budget(request.max_cost_usd, state.spent_usd, tier, tokens_in, tokens_out)
    if reason is not None:
        return Trigger.OVER_BUDGET, reason
    budget = ctx.config.budgets.for_tenant(request.tenant)
    if budget is not None:
        reason = tier_over_budget(tier, budget, tenant_spend_usd, tokens_in, tokens_out)
        if reason is not None:
            return Trigger.OVER_BUDGET, reason
    if circuit is not None and not circuit.allows:
        return Trigger.CIRCUIT_OPEN, f"circuit {circuit.state.value}: tier skipped without a call"
    return None


def plan_from(
    state: RoutedRequest,
    start: int,
    policy: PolicyDecision,
    ctx: DecisionContext,
    circuits: Mapping[str, CircuitView],
    tenant_spend_usd: float,
    exclude: frozenset[str] = frozenset(),
) -> Outcome:
    """Walk the tiers from `start`: skip the ineligible (with verdicts), forward to the
    first eligible, or answer `unavailable` when none is left."""
    attempt_no = state.attempt
    history = list(state.history)
    skipped: list[Verdict] = []
    tiers = ctx.config.tiers
    if policy.restricted and policy.allowed_tiers:
        candidates = [t for t in tiers if t.name in policy.allowed_tiers]
    elif policy.restricted:
        candidates = list(tiers)  # nowhere to go: every tier's verdict says why
    else:
        # Restricted tiers serve only confined requests: passed over without a verdict.
        candidates = [t for t in tiers[start:] if not t.restricted]
    for tier in candidates:
        if tier.name in exclude:
            continue
        circuit = circuits.get(tier.name)
        skip = skip_reason(tier, state, policy, ctx, circuit, tenant_spend_usd)
        if skip is None:
            forward = state.model_copy(
                update={
                    "tier": tier.name,
                    "attempt": attempt_no,
                    "history": history,
                    "tier_retry": 0,
                    "not_before": None,
                    "routed_at": ctx.now,
                }
            )
            return Outcome(
                verdicts=_chained(skipped, tier.name),
                forward=forward,
                breaker_events=probe_events(tier.name, circuit),
            )
        trigger, reason = skip
        verdict = skipped_verdict(state.request, attempt_no, tier, trigger, reason, ctx.now)
        skipped.append(verdict)
        history.append(verdict.summary())
        attempt_no += 1
        if trigger is Trigger.DEADLINE and remaining_ms(state.request, ctx.now) <= 0:
            break  # out of time: answer now instead of walking the rest
        # (time left but too little for this tier: a later tier may have a shorter timeout)
    final = state.model_copy(update={"history": history, "attempt": attempt_no})
    return Outcome(verdicts=_chained(skipped, None), response=unavailable_response(final, ctx.now))


def _chained(skipped: list[Verdict], last: str | None) -> tuple[Verdict, ...]:
    """Each skipped tier's verdict names the tier the request went to after it."""
    following = [v.tier for v in skipped[1:]] + [last]
    return tuple(
        v.model_copy(update={"next_tier": n}) for v, n in zip(skipped, following, strict=False)
    )


def skipped_verdict(
    request: Request,
    attempt_no: int,
    tier: TierConfig,
    trigger: Trigger,
    reason: str,
    now: datetime,
) -> Verdict:
    return Verdict(
        request_id=request.request_id,
        tenant=request.tenant,
        attempt=attempt_no,
        tier=tier.name,
        model=None,
        called=False,
        accepted=False,
        trigger=trigger,
        fallback_type=fallback_type_of(trigger),
        reasons=[reason],
        next_tier=None,
        latency_ms=0.0,
        queue_wait_ms=0.0,
        tokens_in=0,
        tokens_out=0,
        cost_usd=0.0,
        confidence=None,
        safety_score=None,
        region=request.region,
        decided_at=now,
    )


# -------------------------------------------------------------- responses ----


def _elapsed_ms(request: Request, now: datetime) -> float:
    return max((now - request.created_at).total_seconds() * 1000, 0.0)


def _within_deadline(request: Request, now: datetime) -> bool | None:
    deadline = request_deadline(request)
    return None if deadline is None else now <= deadline


def served_response(
    state: RoutedRequest, attempt: Attempt, tier: TierConfig, now: datetime
) -> Response:
    return _final_response(
        state,
        now,
        status="served",
        served_by=tier.name,
        model=attempt.model,
        output=attempt.output,
        confidence=effective_confidence(attempt, tier),
    )


def unavailable_response(state: RoutedRequest, now: datetime) -> Response:
    return _final_response(state, now, status="unavailable", message=UNAVAILABLE_MESSAGE)


def _final_response(state: RoutedRequest, now: datetime, **outcome: Any) -> Response:
    """A routed request's last word: `outcome` (its status, what served it) and the
    totals and timing that every final response reports alike."""
    request = state.request
    return Response(
        request_id=request.request_id,
        tenant=request.tenant,
        latency_ms=_elapsed_ms(request, now),
        cost_usd=state.spent_usd,
        deadline_ms=request.deadline_ms,
        within_deadline=_within_deadline(request, now),
        attempts=list(state.history),
        created_at=request.created_at,
        completed_at=now,
        **outcome,
    )


def invalid_response(request_id: str, reason: str, now: datetime) -> Response:
    return Response(
        request_id=request_id,
        tenant="unknown",
        status="invalid",
        message=f"Invalid request: {reason}",
        reason=reason,
        completed_at=now,
    )


# ------------------------------------------------------------- call time ----


def call_may_start(circuit: CircuitView | None) -> bool:
    """A queued call about to start: not while its tier's circuit is open.

    Half-open lets it through: the call may be the probe the router reserved
    (probes are not told apart), and its outcome is what the half-open state
    waits for.
    """
    return circuit is None or not circuit.config.enabled or circuit.state is not CircuitState.OPEN


def skipped_call(routed: RoutedRequest, model: str, now: datetime) -> Attempt:
    """The attempt of a call skipped at call time: never sent, no cost, not retried."""
    return Attempt(
        routed=routed,
        model=model,
        error_trigger=Trigger.CIRCUIT_OPEN,
        error=QUEUED_BEHIND_OPEN_CIRCUIT,
        retryable=False,
        called=False,
        latency_ms=0.0,
        queue_wait_ms=max((now - routed.routed_at).total_seconds() * 1000, 0.0),
        started_at=now,
        finished_at=now,
    )
