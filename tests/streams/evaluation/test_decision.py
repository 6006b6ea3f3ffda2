"""The fallback decision logic, pure: no broker, no worker, time from a fake clock.

Configs come from `parse_config` (adapters are never called here), events are
built directly, breakers are real `CircuitBreaker`s on a fake clock (their views
passed in, the outcome's events applied as the stage does) and the safety
scorer is the real profanity classifier.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.events import (
    UNAVAILABLE_MESSAGE,
    Attempt,
    FallbackType,
    Request,
    Response,
    RoutedRequest,
    Trigger,
    Verdict,
)
from streams.config import FallbackConfig, SafetyConfig, parse_config
from streams.evaluation.circuit import (
    CallOutcome,
    CircuitBreaker,
    CircuitState,
    RecordCall,
    ReleaseProbe,
    ReserveProbe,
    apply_breaker_events,
    circuit_views,
)
from streams.evaluation.decision import (
    Charge,
    DecisionContext,
    Outcome,
    call_may_start,
    evaluate_attempt,
    route_request,
    skipped_call,
)
from streams.evaluation.safety import SafetyScorer
from tests.clock import FakeClock

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
SAFE_TEXT = "Four."
UNSAFE_TEXT = "you are a fucking idiot and i hate you"
BAD = Trigger.BAD_REQUEST


# ---------------------------------------------------------------- set-up ----


@pytest.fixture(scope="module")
def safety() -> SafetyScorer:
    return SafetyScorer(SafetyConfig())


def tier(name: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "adapter": {"kind": "python", "callable": "tests.pipeline.models:scripted"},
        "price": {"per_call_usd": 0.001},
        "timeout_ms": 1000,
        "accept": {"max_latency_ms": 500, "min_confidence": 0.8},
    }
    data.update(overrides)
    return data


def three_tiers(**per_tier: dict[str, Any]) -> list[dict[str, Any]]:
    """primary ($0.01), backup ($0.001), local (free); overrides by tier name."""
    prices = {"primary": 0.01, "backup": 0.001, "local": 0.0}
    return [
        tier(name, **{"price": {"per_call_usd": price}, **per_tier.get(name, {})})
        for name, price in prices.items()
    ]


class World:
    """A config plus what a worker keeps: breakers on a fake clock, tenant spend, an rng."""

    def __init__(self, config: FallbackConfig, safety: SafetyScorer) -> None:
        self.config = config
        self.clock = FakeClock()
        self.circuits = {t.name: CircuitBreaker.for_tier(t) for t in config.tiers}
        self.safety = safety
        self.spend: dict[str, float] = {}
        self.rng = random.Random(1234)
        self.now = NOW

    def ctx(self, tenant: str = "default") -> DecisionContext:
        return DecisionContext(
            config=self.config,
            circuits=circuit_views(self.circuits, self.clock()),
            safety=self.safety,
            tenant_spend_usd=self.spend.get(tenant, 0.0),
            now=self.now,
            rng=self.rng,
        )

    def apply(self, outcome: Outcome) -> Outcome:
        """What the stage does with an outcome: breaker events and charges."""
        apply_breaker_events(self.circuits, outcome.breaker_events, self.clock())
        for charge in outcome.charges:
            self.spend[charge.tenant] = self.spend.get(charge.tenant, 0.0) + charge.usd
        return outcome

    def route(self, req: Request) -> Outcome:
        return self.apply(checked(route_request(req, self.now, self.ctx(req.tenant))))

    def evaluate(self, attempt: Attempt) -> Outcome:
        ctx = self.ctx(attempt.routed.request.tenant)
        return self.apply(checked(evaluate_attempt(attempt, ctx)))

    def fail(self, tier: str, times: int) -> None:
        """Failures recorded straight into a tier's breaker."""
        for _ in range(times):
            self.circuits[tier].record(CallOutcome(False, 10.0), self.clock())

    def forwarded(self, req: Request) -> RoutedRequest:
        outcome = self.route(req)
        assert outcome.forward is not None, outcome
        return outcome.forward


Maker = Callable[..., World]


@pytest.fixture
def world(safety: SafetyScorer) -> Maker:
    def make(tiers: list[dict[str, Any]] | None = None, **sections: Any) -> World:
        data: dict[str, Any] = {"tiers": tiers if tiers is not None else three_tiers()}
        data.update(sections)
        return World(parse_config(data), safety)

    return make


def request(**fields: Any) -> Request:
    fields.setdefault("request_id", "r1")
    fields.setdefault("input", {"prompt": "What is two plus two?"})
    fields.setdefault("created_at", NOW)
    return Request(**fields)


def answer(
    routed: RoutedRequest,
    output: Any = None,
    *,
    latency_ms: float = 100.0,
    confidence: float | None = 0.95,
    cost_usd: float = 0.001,
) -> Attempt:
    return Attempt(
        routed=routed,
        model=f"{routed.tier}-model",
        output={"content": SAFE_TEXT} if output is None else output,
        latency_ms=latency_ms,
        queue_wait_ms=2.0,
        tokens_in=10,
        tokens_out=5,
        cost_usd=cost_usd,
        confidence=confidence,
        started_at=NOW,
        finished_at=NOW + timedelta(milliseconds=latency_ms),
    )


def failure(
    routed: RoutedRequest,
    trigger: Trigger,
    message: str = "boom",
    *,
    retryable: bool = False,
    retry_after_ms: float | None = None,
    latency_ms: float = 50.0,
) -> Attempt:
    return Attempt(
        routed=routed,
        model=f"{routed.tier}-model",
        error_trigger=trigger,
        error=message,
        retryable=retryable,
        retry_after_ms=retry_after_ms,
        latency_ms=latency_ms,
        queue_wait_ms=2.0,
        started_at=NOW,
        finished_at=NOW + timedelta(milliseconds=latency_ms),
    )


def checked(outcome: Outcome) -> Outcome:
    """Invariants of every outcome, whatever happened."""
    assert (outcome.forward is None) != (outcome.response is None), "exactly one of the two"
    numbers = [v.attempt for v in outcome.verdicts]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) if numbers else True
    assert sum(v.accepted for v in outcome.verdicts) <= 1
    for verdict in outcome.verdicts:
        if not verdict.called:
            assert not verdict.accepted and verdict.trigger is not None
            assert (verdict.cost_usd, verdict.latency_ms, verdict.model) == (0.0, 0.0, None)
        assert (verdict.trigger is None) == verdict.accepted
        if verdict.trigger is not None:
            assert verdict.reasons
    if outcome.forward is not None:
        forward = outcome.forward
        history = [a.attempt for a in forward.history]
        assert history == list(range(1, forward.attempt))
        if numbers:
            assert forward.attempt == numbers[-1] + 1
            assert outcome.verdicts[-1].next_tier == forward.tier
    if outcome.response is not None:
        response = outcome.response
        assert [a.attempt for a in response.attempts] == list(range(1, len(response.attempts) + 1))
        assert response.cost_usd == pytest.approx(sum(a.cost_usd for a in response.attempts))
        if response.status == "served":
            assert outcome.verdicts[-1].accepted and response.attempts[-1].accepted
        else:
            assert response.message == UNAVAILABLE_MESSAGE
            assert response.served_by is None and response.output is None
            assert not any(a.accepted for a in response.attempts)
    # next_tier names where the request went after each verdict
    for before, after in itertools.pairwise(outcome.verdicts):
        assert before.next_tier == after.tier
    if outcome.response is not None and outcome.verdicts:
        assert outcome.verdicts[-1].next_tier is None
    return outcome


def only_verdict(outcome: Outcome) -> Verdict:
    assert len(outcome.verdicts) == 1, outcome.verdicts
    return outcome.verdicts[0]


# --------------------------------------------------------------- routing ----


def test_a_new_request_goes_to_the_first_tier(world: Maker) -> None:
    w = world()
    received = NOW - timedelta(milliseconds=3)
    outcome = route_request(request(), received, w.ctx())
    assert outcome.verdicts == () and outcome.response is None
    forward = outcome.forward
    assert forward is not None
    assert (forward.tier, forward.attempt, forward.tier_retry) == ("primary", 1, 0)
    assert forward.history == [] and forward.spent_usd == 0
    assert (forward.received_at, forward.routed_at) == (received, NOW)
    assert forward.not_before is None and not forward.restricted


def test_where_to_reply_goes_with_the_request_through_every_fallback(world: Maker) -> None:
    w = world()
    outcome = route_request(request(), NOW, w.ctx(), reply_to="p.responses")
    assert outcome.forward is not None and outcome.forward.reply_to == "p.responses"
    fell_back = w.evaluate(failure(outcome.forward, Trigger.ERROR))
    assert fell_back.forward is not None
    assert (fell_back.forward.tier, fell_back.forward.reply_to) == ("backup", "p.responses")
    assert w.forwarded(request()).reply_to is None  # the default: the current topic


def test_restricted_tiers_are_passed_over_silently_in_normal_routing(world: Maker) -> None:
    w = world(
        [tier("guarded", restricted=True), *three_tiers()],
        policy={"restricted_tier": "guarded"},
    )
    outcome = w.route(request())
    assert outcome.verdicts == ()
    assert outcome.forward is not None and outcome.forward.tier == "primary"
    assert outcome.forward.attempt == 1


def test_restricted_tier_is_never_reached_when_every_normal_tier_rejects(world: Maker) -> None:
    w = world([*three_tiers(), tier("guarded", restricted=True)])
    outcome = w.route(request())
    while outcome.forward is not None:
        assert outcome.forward.tier != "guarded"
        outcome = w.evaluate(answer(outcome.forward, confidence=0.1))
    assert outcome.response is not None and outcome.response.status == "unavailable"
    assert [a.tier for a in outcome.response.attempts] == ["primary", "backup", "local"]


@pytest.mark.parametrize(
    ("rule", "skipped"),
    [
        ({"name": "cheap", "tenants": ["acme"], "allow_tiers": ["local"]}, ["primary", "backup"]),
        ({"name": "no-paid", "tags": ["pii"], "deny_tiers": ["primary", "backup"]}, None),
        ({"name": "eu-data", "regions": ["eu"], "same_region_only": True}, None),
    ],
    ids=["allow_tiers", "deny_tiers", "same_region_only"],
)
def test_policy_rules_skip_tiers_with_policy_verdicts(
    world: Maker, rule: dict[str, Any], skipped: list[str] | None
) -> None:
    w = world(
        three_tiers(primary={"region": "us"}, backup={"region": "us"}, local={"region": "eu"}),
        policy={"rules": [rule]},
    )
    outcome = w.route(request(tenant="acme", tags=["pii"], region="eu"))
    assert [v.tier for v in outcome.verdicts] == (skipped or ["primary", "backup"])
    for number, verdict in enumerate(outcome.verdicts, start=1):
        assert verdict.attempt == number
        assert (verdict.called, verdict.accepted, verdict.trigger, verdict.fallback_type) == (
            False,
            False,
            Trigger.POLICY,
            FallbackType.POLICY,
        )
        assert verdict.cost_usd == 0 and verdict.model is None
        assert f"rule {rule['name']}" in verdict.reasons[0]
        assert verdict.region == "eu" and verdict.tenant == "acme"
    assert [v.next_tier for v in outcome.verdicts] == ["backup", "local"]
    forward = outcome.forward
    assert forward is not None and (forward.tier, forward.attempt) == ("local", 3)
    assert [(a.tier, a.trigger) for a in forward.history] == [
        ("primary", Trigger.POLICY),
        ("backup", Trigger.POLICY),
    ]


def test_policy_leaving_no_tier_answers_unavailable_at_once(world: Maker) -> None:
    w = world(policy={"rules": [{"name": "eu-data", "same_region_only": True}]})
    outcome = w.route(request())  # no region: fails closed
    response = outcome.response
    assert response is not None and response.status == "unavailable"
    assert [(a.tier, a.trigger) for a in response.attempts] == [
        ("primary", Trigger.POLICY),
        ("backup", Trigger.POLICY),
        ("local", Trigger.POLICY),
    ]
    assert all("request has no region" in a.reasons[0] for a in response.attempts)
    assert response.cost_usd == 0


def test_unsafe_prompt_goes_to_the_restricted_tier(world: Maker) -> None:
    w = world(
        [*three_tiers(), tier("guarded", restricted=True, price={"per_call_usd": 0.0})],
        policy={"restricted_tier": "guarded", "input_safety": True},
    )
    unsafe = w.route(request(input={"messages": [{"role": "user", "content": UNSAFE_TEXT}]}))
    assert unsafe.verdicts == ()
    assert unsafe.forward is not None
    assert (unsafe.forward.tier, unsafe.forward.attempt) == ("guarded", 1)
    assert unsafe.forward.restricted
    safe = w.route(request(request_id="r2"))
    assert safe.forward is not None and safe.forward.tier == "primary"
    assert not safe.forward.restricted


def test_unsafe_prompt_without_a_restricted_tier_is_refused(world: Maker) -> None:
    w = world(policy={"input_safety": True})
    outcome = w.route(request(input={"prompt": UNSAFE_TEXT}))
    assert outcome.response is not None and outcome.response.status == "unavailable"
    assert {a.trigger for a in outcome.response.attempts} == {Trigger.POLICY}


def test_route_to_restricted_rule_confines_the_request(world: Maker) -> None:
    w = world(
        [*three_tiers(), tier("guarded", restricted=True)],
        policy={
            "restricted_tier": "guarded",
            "rules": [{"name": "flagged", "tags": ["flagged"], "route_to_restricted": True}],
        },
    )
    forward = w.forwarded(request(tags=["flagged"]))
    assert (forward.tier, forward.attempt, forward.restricted) == ("guarded", 1, True)


def test_open_circuit_skips_the_tier_without_a_call(world: Maker) -> None:
    w = world()
    w.fail("primary", 20)
    assert w.circuits["primary"].state is CircuitState.OPEN
    outcome = w.route(request())
    verdict = only_verdict(outcome)
    assert (verdict.tier, verdict.attempt, verdict.called) == ("primary", 1, False)
    assert (verdict.trigger, verdict.fallback_type) == (
        Trigger.CIRCUIT_OPEN,
        FallbackType.RELIABILITY,
    )
    assert verdict.next_tier == "backup"
    assert outcome.forward is not None
    assert (outcome.forward.tier, outcome.forward.attempt) == ("backup", 2)


def test_spent_tenant_budget_skips_expensive_tiers(world: Maker) -> None:
    w = world(
        budgets={"tenants": {"skint": {"usd": 0.005, "expensive_above_usd": 0.005}}},
    )
    w.spend["skint"] = 0.006
    outcome = w.route(request(tenant="skint"))
    verdict = only_verdict(outcome)
    assert (verdict.tier, verdict.trigger, verdict.fallback_type, verdict.called) == (
        "primary",
        Trigger.OVER_BUDGET,
        FallbackType.COST,
        False,
    )
    assert "tenant budget spent" in verdict.reasons[0]
    assert outcome.forward is not None and outcome.forward.tier == "backup"
    # below the budget, or another tenant: the primary serves
    w.spend["skint"] = 0.004
    assert w.forwarded(request(tenant="skint")).tier == "primary"
    w.spend["skint"] = 1.0
    assert w.forwarded(request(tenant="rich")).tier == "primary"


def test_default_budget_with_zero_threshold_leaves_only_free_tiers(world: Maker) -> None:
    w = world(budgets={"default": {"usd": 1.0}})
    w.spend["anyone"] = 1.0
    outcome = w.route(request(tenant="anyone"))
    assert [v.tier for v in outcome.verdicts] == ["primary", "backup"]
    assert outcome.forward is not None and outcome.forward.tier == "local"


def test_request_max_cost_skips_tiers_it_cannot_afford(world: Maker) -> None:
    w = world()
    outcome = w.route(request(max_cost_usd=0.002))
    verdict = only_verdict(outcome)
    assert (verdict.tier, verdict.trigger) == ("primary", Trigger.OVER_BUDGET)
    assert "max_cost_usd" in verdict.reasons[0]
    assert outcome.forward is not None and outcome.forward.tier == "backup"


def test_request_max_cost_counts_what_was_already_spent(world: Maker) -> None:
    w = world()
    forward = w.forwarded(request(max_cost_usd=0.0105))
    outcome = w.evaluate(answer(forward, confidence=0.1, cost_usd=0.01))
    # backup ($0.001) no longer fits the $0.0005 left; local is free
    assert [(v.tier, v.trigger) for v in outcome.verdicts] == [
        ("primary", Trigger.LOW_CONFIDENCE),
        ("backup", Trigger.OVER_BUDGET),
    ]
    assert outcome.forward is not None
    assert (outcome.forward.tier, outcome.forward.spent_usd) == ("local", pytest.approx(0.01))


def test_deadline_too_short_for_every_tier_answers_unavailable_at_once(world: Maker) -> None:
    w = world()
    outcome = w.route(request(deadline_ms=200))  # 200 ms < 25% of each 1000 ms timeout
    response = outcome.response
    assert response is not None and response.status == "unavailable"
    assert response.message == UNAVAILABLE_MESSAGE
    assert outcome.verdicts[0].trigger is Trigger.DEADLINE
    assert outcome.verdicts[0].fallback_type is FallbackType.LATENCY
    assert {v.trigger for v in outcome.verdicts} == {Trigger.DEADLINE}
    assert response.deadline_ms == 200 and response.within_deadline is True


def test_request_already_past_its_deadline_stops_at_the_first_tier(world: Maker) -> None:
    w = world()
    outcome = w.route(request(deadline_ms=100, created_at=NOW - timedelta(seconds=1)))
    verdict = only_verdict(outcome)
    assert (verdict.tier, verdict.trigger) == ("primary", Trigger.DEADLINE)
    assert verdict.reasons == ["0 ms left before the deadline"]
    assert outcome.response is not None and outcome.response.within_deadline is False


def test_deadline_skips_a_slow_tier_but_a_faster_one_still_fits(world: Maker) -> None:
    w = world(three_tiers(local={"timeout_ms": 100, "accept": {"max_latency_ms": 80}}))
    outcome = w.route(request(deadline_ms=200))
    assert [(v.tier, v.trigger) for v in outcome.verdicts] == [
        ("primary", Trigger.DEADLINE),
        ("backup", Trigger.DEADLINE),
    ]
    assert outcome.forward is not None and outcome.forward.tier == "local"


# ------------------------------------------------------------- evaluation ----


def test_accepted_answer_is_served(world: Maker) -> None:
    w = world()
    forward = w.forwarded(request(deadline_ms=5000))
    w.now = NOW + timedelta(milliseconds=150)
    outcome = w.evaluate(answer(forward, latency_ms=120, confidence=0.9, cost_usd=0.01))
    verdict = only_verdict(outcome)
    assert verdict.accepted and verdict.called
    assert (verdict.tier, verdict.attempt, verdict.model) == ("primary", 1, "primary-model")
    assert verdict.trigger is None and verdict.fallback_type is None and verdict.reasons == []
    assert (verdict.latency_ms, verdict.queue_wait_ms, verdict.cost_usd) == (120, 2.0, 0.01)
    assert (verdict.tokens_in, verdict.tokens_out, verdict.confidence) == (10, 5, 0.9)
    response = outcome.response
    assert response is not None and outcome.forward is None
    assert (response.status, response.served_by, response.model) == (
        "served",
        "primary",
        "primary-model",
    )
    assert response.output == {"content": SAFE_TEXT}
    assert response.confidence == 0.9
    assert response.cost_usd == pytest.approx(0.01)
    assert response.latency_ms == pytest.approx(150)
    assert response.within_deadline is True and response.message is None
    assert [a.tier for a in response.attempts] == ["primary"]


def test_served_response_carries_all_spend_and_earlier_rejections(world: Maker) -> None:
    w = world()
    first = w.forwarded(request())
    rejected = w.evaluate(answer(first, confidence=0.3, cost_usd=0.01))
    assert rejected.forward is not None
    outcome = w.evaluate(answer(rejected.forward, cost_usd=0.001))
    response = outcome.response
    assert response is not None and response.served_by == "backup"
    assert response.cost_usd == pytest.approx(0.011)
    assert [(a.tier, a.accepted, a.trigger) for a in response.attempts] == [
        ("primary", False, Trigger.LOW_CONFIDENCE),
        ("backup", True, None),
    ]
    assert only_verdict(outcome).attempt == 2


def test_latency_must_be_strictly_below_the_limit(world: Maker) -> None:
    w = world()
    forward = w.forwarded(request())
    assert only_verdict(w.evaluate(answer(forward, latency_ms=499.9))).accepted
    verdict = only_verdict(w.evaluate(answer(forward, latency_ms=500.0)))
    assert verdict.trigger is Trigger.SLOW


def test_confidence_equal_to_the_threshold_is_accepted(world: Maker) -> None:
    w = world()
    forward = w.forwarded(request())
    assert only_verdict(w.evaluate(answer(forward, confidence=0.8))).accepted


REJECTIONS: dict[str, tuple[dict[str, Any], Callable[[RoutedRequest], Attempt], Trigger, str]] = {
    "error": ({}, lambda r: failure(r, Trigger.ERROR, "RuntimeError: down"), Trigger.ERROR, "down"),
    "timeout": (
        {},
        lambda r: failure(r, Trigger.TIMEOUT, "no answer within 1000 ms", latency_ms=1000),
        Trigger.TIMEOUT,
        "no answer within 1000 ms",
    ),
    "slow": ({}, lambda r: answer(r, latency_ms=650), Trigger.SLOW, "latency 650 ms >= 500 ms"),
    "low_confidence": (
        {},
        lambda r: answer(r, confidence=0.42),
        Trigger.LOW_CONFIDENCE,
        "confidence 0.420 < 0.8",
    ),
    "default_confidence": (
        {"default_confidence": 0.6},
        lambda r: answer(r, confidence=None),
        Trigger.LOW_CONFIDENCE,
        "confidence 0.600 < 0.8",
    ),
    "no_confidence": (
        {},
        lambda r: answer(r, confidence=None),
        Trigger.LOW_CONFIDENCE,
        "confidence none < 0.8",
    ),
    "unsafe": (
        {"accept": {"safety": True}},
        lambda r: answer(r, {"content": UNSAFE_TEXT}),
        Trigger.UNSAFE,
        "profanity classifier",
    ),
    "over_budget": (
        {"accept": {"max_cost_usd": 0.005}},
        lambda r: answer(r, cost_usd=0.02),
        Trigger.OVER_BUDGET,
        "cost $0.020000 > $0.005000",
    ),
    "not_json": (
        {"accept": {"quality": [{"check": "json"}]}},
        lambda r: answer(r, {"content": "certainly! here it is"}),
        Trigger.INVALID_OUTPUT,
        "output is not JSON",
    ),
    "empty": (
        {"accept": {"quality": [{"check": "non_empty"}]}},
        lambda r: answer(r, {"content": "  "}),
        Trigger.INVALID_OUTPUT,
        "output is empty",
    ),
    "schema": (
        {
            "accept": {
                "quality": [
                    {"check": "json_schema", "json_schema": {"type": "object", "required": ["n"]}}
                ]
            }
        },
        lambda r: answer(r, {"m": 4}),
        Trigger.INVALID_OUTPUT,
        "does not match the schema",
    ),
    "hallucination": (
        {
            "accept": {
                "quality": [
                    {
                        "check": "callable",
                        "callable": "tests.streams.evaluation.sample_quality:grounded_in_prompt",
                        "min_score": 0.5,
                    }
                ]
            }
        },
        lambda r: answer(r, "the moon is made of cheese"),
        Trigger.HALLUCINATION,
        "< min_score 0.5",
    ),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_each_rejection_falls_to_the_next_tier(world: Maker, case: str) -> None:
    overrides, make_attempt, trigger, reason = REJECTIONS[case]
    w = world(three_tiers(primary=overrides))
    routed = w.forwarded(request())
    attempt = make_attempt(routed)
    outcome = w.evaluate(attempt)
    verdict = only_verdict(outcome)
    assert (verdict.tier, verdict.attempt, verdict.called, verdict.accepted) == (
        "primary",
        1,
        True,
        False,
    )
    assert verdict.trigger is trigger
    assert any(reason in text for text in verdict.reasons), verdict.reasons
    assert verdict.next_tier == "backup"
    assert verdict.cost_usd == attempt.cost_usd
    forward = outcome.forward
    assert forward is not None and outcome.response is None
    assert (forward.tier, forward.attempt, forward.tier_retry) == ("backup", 2, 0)
    assert forward.spent_usd == pytest.approx(attempt.cost_usd)
    assert forward.history == [verdict.summary()]
    assert forward.routed_at == NOW and forward.not_before is None
    if trigger is Trigger.UNSAFE:
        assert verdict.safety_score is not None and verdict.safety_score > 0.5


def test_fallback_types_of_the_triggers(world: Maker) -> None:
    expected = {
        "error": FallbackType.RELIABILITY,
        "timeout": FallbackType.RELIABILITY,
        "slow": FallbackType.LATENCY,
        "low_confidence": FallbackType.QUALITY,
        "unsafe": FallbackType.QUALITY,
        "over_budget": FallbackType.COST,
        "hallucination": FallbackType.QUALITY,
    }
    for case, fallback_type in expected.items():
        overrides, make_attempt, _, _ = REJECTIONS[case]
        w = world(three_tiers(primary=overrides))
        verdict = w.evaluate(make_attempt(w.forwarded(request()))).verdicts[0]
        assert verdict.fallback_type is fallback_type, case


def test_default_confidence_stands_in_when_the_model_gives_none(world: Maker) -> None:
    w = world(three_tiers(primary={"default_confidence": 0.9}))
    outcome = w.evaluate(answer(w.forwarded(request()), confidence=None))
    assert only_verdict(outcome).accepted and only_verdict(outcome).confidence == 0.9
    assert outcome.response is not None and outcome.response.confidence == 0.9


def test_every_failed_check_is_reported_and_unsafe_ranks_first(world: Maker) -> None:
    w = world(three_tiers(primary={"accept": {"max_latency_ms": 500, "safety": True}}))
    routed = w.forwarded(request())
    verdict = only_verdict(w.evaluate(answer(routed, {"content": UNSAFE_TEXT}, latency_ms=900)))
    assert verdict.trigger is Trigger.UNSAFE
    assert len(verdict.reasons) == 2 and any("latency" in r for r in verdict.reasons)


def test_safe_answer_passes_the_safety_check(world: Maker) -> None:
    w = world(three_tiers(primary={"accept": {"safety": True}}))
    outcome = w.evaluate(answer(w.forwarded(request()), {"content": "Paris is in France."}))
    assert only_verdict(outcome).accepted


def test_the_last_tier_rejecting_answers_unavailable(world: Maker) -> None:
    w = world()
    outcome = w.route(request())
    costs = {"primary": 0.01, "backup": 0.001, "local": 0.0}
    while outcome.forward is not None:
        forward = outcome.forward
        if forward.tier == "primary":
            outcome = w.evaluate(failure(forward, Trigger.ERROR))
        else:
            outcome = w.evaluate(answer(forward, confidence=0.2, cost_usd=costs[forward.tier]))
    response = outcome.response
    assert response is not None
    assert (response.status, response.message) == ("unavailable", UNAVAILABLE_MESSAGE)
    assert (response.served_by, response.model, response.output) == (None, None, None)
    assert [(a.attempt, a.tier, a.trigger) for a in response.attempts] == [
        (1, "primary", Trigger.ERROR),
        (2, "backup", Trigger.LOW_CONFIDENCE),
        (3, "local", Trigger.LOW_CONFIDENCE),
    ]
    assert response.attempts[0].reasons == ["boom"]
    assert response.cost_usd == pytest.approx(0.001)
    assert only_verdict(outcome).next_tier is None


def test_rejection_followed_by_skips_chains_next_tier_through_them(world: Maker) -> None:
    w = world()
    w.fail("backup", 20)
    outcome = w.evaluate(failure(w.forwarded(request()), Trigger.ERROR))
    assert [(v.tier, v.trigger, v.next_tier) for v in outcome.verdicts] == [
        ("primary", Trigger.ERROR, "backup"),
        ("backup", Trigger.CIRCUIT_OPEN, "local"),
    ]
    assert outcome.forward is not None
    assert (outcome.forward.tier, outcome.forward.attempt) == ("local", 3)


# ---------------------------------------------------------------- retries ----


def retrying_world(world: Maker, **retry: Any) -> World:
    settings = {"max_retries": 2, "initial_backoff_ms": 100, **retry}
    return world(three_tiers(primary={"retry": settings}))


def test_retryable_error_is_retried_on_the_same_tier_after_a_backoff(world: Maker) -> None:
    w = retrying_world(world)
    routed = w.forwarded(request())
    outcome = w.evaluate(failure(routed, Trigger.ERROR, retryable=True))
    verdict = only_verdict(outcome)
    assert (verdict.trigger, verdict.next_tier, verdict.attempt) == (Trigger.ERROR, "primary", 1)
    retry = outcome.forward
    assert retry is not None
    assert (retry.tier, retry.attempt, retry.tier_retry) == ("primary", 2, 1)
    assert retry.not_before is not None
    assert NOW <= retry.not_before <= NOW + timedelta(milliseconds=100)
    assert [a.attempt for a in retry.history] == [1]


def test_retry_honours_retry_after(world: Maker) -> None:
    w = retrying_world(world)
    routed = w.forwarded(request())
    outcome = w.evaluate(
        failure(routed, Trigger.RATE_LIMITED, "429", retryable=True, retry_after_ms=300)
    )
    assert outcome.forward is not None and outcome.forward.tier == "primary"
    assert outcome.forward.not_before is not None
    assert outcome.forward.not_before >= NOW + timedelta(milliseconds=300)
    assert only_verdict(outcome).fallback_type is FallbackType.RELIABILITY


def test_retry_after_beyond_the_limit_falls_back_instead(world: Maker) -> None:
    w = retrying_world(world, max_retry_after_ms=1000)
    routed = w.forwarded(request())
    attempt = failure(routed, Trigger.RATE_LIMITED, retryable=True, retry_after_ms=5000)
    outcome = w.evaluate(attempt)
    assert outcome.forward is not None and outcome.forward.tier == "backup"


def test_retries_are_bounded_then_the_request_falls_back(world: Maker) -> None:
    w = retrying_world(world)
    outcome = w.route(request())
    tiers = []
    while outcome.forward is not None and outcome.forward.tier == "primary":
        tiers.append(outcome.forward.tier_retry)
        outcome = w.evaluate(failure(outcome.forward, Trigger.ERROR, retryable=True))
    assert tiers == [0, 1, 2]
    forward = outcome.forward
    assert forward is not None and forward.tier == "backup"
    assert (forward.attempt, forward.tier_retry, forward.not_before) == (4, 0, None)
    assert [(a.attempt, a.tier) for a in forward.history] == [
        (1, "primary"),
        (2, "primary"),
        (3, "primary"),
    ]


def test_no_retry_without_retry_config(world: Maker) -> None:
    w = world()
    outcome = w.evaluate(failure(w.forwarded(request()), Trigger.ERROR, retryable=True))
    assert outcome.forward is not None and outcome.forward.tier == "backup"


def test_non_retryable_error_is_not_retried(world: Maker) -> None:
    w = retrying_world(world)
    outcome = w.evaluate(failure(w.forwarded(request()), Trigger.ERROR, retryable=False))
    assert outcome.forward is not None and outcome.forward.tier == "backup"


@pytest.mark.parametrize("trigger", [Trigger.CONTEXT_LENGTH, Trigger.POLICY])
@pytest.mark.parametrize("retryable", [False, True])
def test_context_length_and_content_policy_never_retry_on_the_same_tier(
    world: Maker, trigger: Trigger, retryable: bool
) -> None:
    w = retrying_world(world)
    outcome = w.evaluate(failure(w.forwarded(request()), trigger, retryable=retryable))
    assert outcome.forward is None or outcome.forward.tier != "primary"


def test_quality_rejection_is_never_retried_on_the_same_tier(world: Maker) -> None:
    w = retrying_world(world)
    outcome = w.evaluate(answer(w.forwarded(request()), confidence=0.1))
    assert outcome.forward is not None and outcome.forward.tier == "backup"


def test_no_retry_when_the_backoff_would_miss_the_deadline(world: Maker) -> None:
    w = retrying_world(world)
    routed = w.forwarded(request(deadline_ms=900))
    w.now = NOW + timedelta(milliseconds=500)
    attempt = failure(routed, Trigger.RATE_LIMITED, retryable=True, retry_after_ms=300)
    outcome = w.evaluate(attempt)  # 500 + 300 + 250 > 900
    assert outcome.forward is None or outcome.forward.tier != "primary"


def test_no_retry_when_the_failure_opened_the_circuit(world: Maker) -> None:
    w = world(
        three_tiers(
            primary={"retry": {"max_retries": 5}, "circuit": {"min_calls": 2, "failure_rate": 0.5}}
        )
    )
    first = w.evaluate(failure(w.forwarded(request()), Trigger.ERROR, retryable=True))
    assert first.forward is not None and first.forward.tier == "primary"
    second = w.evaluate(failure(first.forward, Trigger.ERROR, retryable=True))
    assert w.circuits["primary"].state is CircuitState.OPEN
    assert second.forward is not None and second.forward.tier == "backup"


# ----------------------------------------------------- context, restricted ----


def test_context_length_skips_tiers_with_too_small_a_window(world: Maker) -> None:
    w = world(
        three_tiers(
            primary={"context_window_tokens": 8000},
            backup={"context_window_tokens": 4000},
            local={"context_window_tokens": 32000},
        )
    )
    outcome = w.evaluate(failure(w.forwarded(request()), Trigger.CONTEXT_LENGTH, "too long"))
    assert [(v.tier, v.trigger, v.called) for v in outcome.verdicts] == [
        ("primary", Trigger.CONTEXT_LENGTH, True),
        ("backup", Trigger.CONTEXT_LENGTH, False),
    ]
    assert "context window 4000 tokens < 8001 needed" in outcome.verdicts[1].reasons
    forward = outcome.forward
    assert forward is not None
    assert (forward.tier, forward.attempt, forward.needs_context_window) == ("local", 3, 8001)


def test_context_window_needed_never_shrinks(world: Maker) -> None:
    w = world(
        [
            tier("big", context_window_tokens=8000),
            tier("unknown"),  # no window configured
            tier("small", context_window_tokens=4000),
            tier("huge", context_window_tokens=128000),
        ]
    )
    first = w.evaluate(failure(w.forwarded(request()), Trigger.CONTEXT_LENGTH))
    assert first.forward is not None and first.forward.tier == "unknown"
    second = w.evaluate(failure(first.forward, Trigger.CONTEXT_LENGTH))
    assert [(v.tier, v.trigger) for v in second.verdicts] == [
        ("unknown", Trigger.CONTEXT_LENGTH),
        ("small", Trigger.CONTEXT_LENGTH),
    ]
    assert second.forward is not None and second.forward.tier == "huge"
    assert second.forward.needs_context_window == 8001


def restricted_world(world: Maker) -> World:
    return world(
        [
            *three_tiers(primary={"accept": {"min_confidence": 0.8, "safety": True}}),
            tier("guarded", restricted=True, price={"per_call_usd": 0.0}),
        ],
        policy={"restricted_tier": "guarded"},
    )


@pytest.mark.parametrize(
    "make_attempt",
    [
        lambda r: answer(r, {"content": UNSAFE_TEXT}),
        lambda r: failure(r, Trigger.POLICY, "content_policy_violation"),
    ],
    ids=["unsafe_output", "provider_policy"],
)
def test_unsafe_or_policy_rejection_goes_to_the_restricted_tier(
    world: Maker, make_attempt: Callable[[RoutedRequest], Attempt]
) -> None:
    w = restricted_world(world)
    outcome = w.evaluate(make_attempt(w.forwarded(request())))
    verdict = only_verdict(outcome)
    assert verdict.next_tier == "guarded"
    forward = outcome.forward
    assert forward is not None
    assert (forward.tier, forward.attempt, forward.restricted) == ("guarded", 2, True)
    # the restricted tier rejecting too leaves nothing: no way back to the normal tiers
    last = w.evaluate(answer(forward, confidence=0.1, cost_usd=0.0))
    assert last.response is not None and last.response.status == "unavailable"
    assert [a.tier for a in last.response.attempts] == ["primary", "guarded"]


def test_restricted_tier_serves_a_confined_request(world: Maker) -> None:
    w = restricted_world(world)
    first = w.evaluate(answer(w.forwarded(request()), {"content": UNSAFE_TEXT}))
    assert first.forward is not None
    served = w.evaluate(answer(first.forward, {"content": "I cannot help with that."}))
    assert served.response is not None and served.response.served_by == "guarded"


def test_restricted_tier_ranked_first_still_takes_unsafe_fallback(world: Maker) -> None:
    w = world(
        [tier("guarded", restricted=True), *three_tiers(backup={"accept": {"safety": True}})],
        policy={"restricted_tier": "guarded"},
    )
    first = w.evaluate(failure(w.forwarded(request()), Trigger.ERROR))
    assert first.forward is not None and first.forward.tier == "backup"
    second = w.evaluate(answer(first.forward, {"content": UNSAFE_TEXT}))
    assert second.forward is not None
    assert (second.forward.tier, second.forward.attempt) == ("guarded", 3)


def test_unsafe_without_a_restricted_tier_falls_to_the_next_tier(world: Maker) -> None:
    w = world(three_tiers(primary={"accept": {"safety": True}}))
    outcome = w.evaluate(answer(w.forwarded(request()), {"content": UNSAFE_TEXT}))
    assert outcome.forward is not None and outcome.forward.tier == "backup"
    assert not outcome.forward.restricted


# --------------------------------------------------------------- circuits ----


def test_system_failures_open_the_circuit_after_min_calls(world: Maker) -> None:
    w = world(
        three_tiers(primary={"circuit": {"min_calls": 4, "open_s": 5, "half_open_probes": 1}})
    )
    breaker = w.circuits["primary"]
    for number in range(4):
        assert breaker.state is CircuitState.CLOSED, number
        w.evaluate(failure(w.forwarded(request(request_id=f"f{number}")), Trigger.TIMEOUT))
    assert breaker.state is CircuitState.OPEN
    skipped = w.route(request(request_id="next"))
    assert skipped.verdicts[0].trigger is Trigger.CIRCUIT_OPEN
    assert skipped.forward is not None and skipped.forward.tier == "backup"
    # after open_s one probe is let through; its success closes the circuit
    w.clock.advance(5)
    probe = w.forwarded(request(request_id="probe"))
    assert probe.tier == "primary" and breaker.state is CircuitState.HALF_OPEN
    assert w.route(request(request_id="during-probe")).verdicts[0].trigger is Trigger.CIRCUIT_OPEN
    w.evaluate(answer(probe))
    assert breaker.state is CircuitState.CLOSED
    assert w.forwarded(request(request_id="after")).tier == "primary"


def test_quality_rejections_do_not_count_against_health(world: Maker) -> None:
    w = world(three_tiers(primary={"circuit": {"min_calls": 3}}))
    for number in range(10):
        forward = w.forwarded(request(request_id=f"q{number}"))
        w.evaluate(answer(forward, confidence=0.1))
    assert w.circuits["primary"].state is CircuitState.CLOSED


# ------------------------------------------------------------- invariants ----


BEHAVIOURS = ["ok", "low", "slow", "error", "transient", "unsafe", "context", "policy", "free"]


def behave(kind: str, routed: RoutedRequest) -> Attempt:
    if kind == "low":
        return answer(routed, confidence=0.3)
    if kind == "slow":
        return answer(routed, latency_ms=900)
    if kind == "error":
        return failure(routed, Trigger.ERROR)
    if kind == "transient":
        return failure(routed, Trigger.RATE_LIMITED, retryable=True, retry_after_ms=10)
    if kind == "unsafe":
        return answer(routed, {"content": UNSAFE_TEXT})
    if kind == "context":
        return failure(routed, Trigger.CONTEXT_LENGTH)
    if kind == "policy":
        return failure(routed, Trigger.POLICY)
    if kind == "free":
        return answer(routed, cost_usd=0.0)
    return answer(routed)


def run_request(w: World, req: Request, rng: random.Random) -> tuple[list[Verdict], Response]:
    """Route one request and keep answering until its final response."""
    verdicts: list[Verdict] = []
    outcome = w.route(req)
    for _ in range(50):
        verdicts.extend(outcome.verdicts)
        if outcome.response is not None:
            return verdicts, outcome.response
        assert outcome.forward is not None
        attempt = behave(rng.choice(BEHAVIOURS), outcome.forward)
        # (the attempt's charge: in the outcome, applied by w.evaluate)
        w.clock.advance(rng.uniform(0, 0.5))
        outcome = w.evaluate(attempt)
    raise AssertionError("no final response after 50 steps")


def test_every_request_gets_one_consistent_final_response(world: Maker) -> None:
    w = world(
        [
            tier(
                "primary",
                region="us",
                price={"per_call_usd": 0.01},
                context_window_tokens=8000,
                accept={"max_latency_ms": 500, "min_confidence": 0.8, "safety": True},
                retry={"max_retries": 2},
                circuit={"min_calls": 5, "open_s": 2, "half_open_probes": 1},
            ),
            tier(
                "backup",
                region="eu",
                context_window_tokens=32000,
                accept={"max_latency_ms": 500, "min_confidence": 0.8, "safety": True},
                retry={"max_retries": 1},
                circuit={"min_calls": 5, "open_s": 2},
            ),
            tier("local", region="eu", price={"per_call_usd": 0.0}, accept={}),
            tier("guarded", region="eu", restricted=True, price={"per_call_usd": 0.0}),
        ],
        policy={
            "restricted_tier": "guarded",
            "input_safety": True,
            "rules": [{"name": "eu-data", "tags": ["eu-only"], "same_region_only": True}],
        },
        budgets={"tenants": {"skint": {"usd": 0.02, "expensive_above_usd": 0.005}}},
    )
    rng = random.Random(20261125)
    statuses = set()
    triggers = set()
    for number in range(120):
        req = request(
            request_id=f"inv-{number}",
            tenant=rng.choice(["acme", "skint"]),
            region=rng.choice([None, "eu", "us"]),
            tags=rng.choice([[], ["eu-only"]]),
            max_cost_usd=rng.choice([None, 0.005, 0.1]),
            deadline_ms=rng.choice([None, 100, 5000]),
            input={"prompt": UNSAFE_TEXT if rng.random() < 0.1 else "What is two plus two?"},
        )
        verdicts, response = run_request(w, req, rng)
        statuses.add(response.status)
        triggers.update(v.trigger for v in verdicts)
        assert [v.attempt for v in verdicts] == list(range(1, len(verdicts) + 1))
        assert response.attempts == [v.summary() for v in verdicts]
        for before, after in itertools.pairwise(verdicts):
            assert before.next_tier == after.tier
        assert verdicts == [] or verdicts[-1].next_tier is None
        assert response.cost_usd == pytest.approx(sum(v.cost_usd for v in verdicts))
        assert sum(v.accepted for v in verdicts) == (response.status == "served")
        if response.status == "served":
            assert verdicts[-1].accepted and response.served_by == verdicts[-1].tier
        if "guarded" in {v.tier for v in verdicts if v.called}:
            # once confined, the request never returns to a normal tier
            first = next(i for i, v in enumerate(verdicts) if v.tier == "guarded")
            assert all(v.tier == "guarded" for v in verdicts[first:])
    assert statuses == {"served", "unavailable"}
    assert {
        Trigger.LOW_CONFIDENCE,
        Trigger.SLOW,
        Trigger.ERROR,
        Trigger.RATE_LIMITED,
        Trigger.UNSAFE,
        Trigger.CONTEXT_LENGTH,
        Trigger.POLICY,
        Trigger.DEADLINE,
        Trigger.OVER_BUDGET,
        Trigger.CIRCUIT_OPEN,
    } <= triggers


# ------------------------------------------------------------------ purity ----


def test_a_decision_changes_nothing_it_is_given(world: Maker) -> None:
    """Values in, the same outcome out, however often it is asked; breakers untouched."""
    w = world(three_tiers(primary={"circuit": {"min_calls": 2}}))
    routed = w.forwarded(request())
    attempt = failure(routed, Trigger.ERROR)
    ctx = w.ctx()
    views = dict(ctx.circuits)
    before = attempt.model_copy(deep=True)
    first = evaluate_attempt(attempt, ctx)
    second = evaluate_attempt(attempt, ctx)
    assert first == second
    assert ctx.circuits == views and attempt == before
    assert w.circuits["primary"].snapshot(w.clock()).calls == 0  # only events, not applied
    assert first.breaker_events == (RecordCall("primary", CallOutcome(False, 50.0)),)
    w.apply(first)
    assert w.circuits["primary"].snapshot(w.clock()).calls == 1


def test_charges_are_returned_and_count_for_the_next_tier_at_once(world: Maker) -> None:
    w = world(budgets={"tenants": {"skint": {"usd": 0.005, "expensive_above_usd": 0.0005}}})
    forward = w.forwarded(request(tenant="skint"))
    outcome = evaluate_attempt(answer(forward, confidence=0.1, cost_usd=0.01), w.ctx("skint"))
    assert outcome.charges == (Charge("skint", 0.01, NOW + timedelta(milliseconds=100)),)
    # the $0.01 just spent passes the budget: backup ($0.001) is skipped, local is free
    assert [(v.tier, v.trigger) for v in outcome.verdicts] == [
        ("primary", Trigger.LOW_CONFIDENCE),
        ("backup", Trigger.OVER_BUDGET),
    ]
    assert w.spend == {}  # nothing charged until the stage applies it


def test_a_half_open_tier_given_a_request_reserves_a_probe(world: Maker) -> None:
    w = world(three_tiers(primary={"circuit": {"min_calls": 2, "half_open_probes": 1}}))
    w.fail("primary", 2)
    w.clock.advance(5)
    ctx = w.ctx()
    assert ctx.circuits["primary"].state is CircuitState.HALF_OPEN
    outcome = route_request(request(), NOW, ctx)
    assert outcome.forward is not None and outcome.forward.tier == "primary"
    assert outcome.breaker_events == (ReserveProbe("primary"),)
    w.apply(outcome)
    assert w.circuits["primary"].snapshot(w.clock()).probes_in_flight == 1
    # the one probe slot is taken: the next request skips the tier
    assert w.route(request(request_id="r2")).verdicts[0].trigger is Trigger.CIRCUIT_OPEN


def test_bad_requests_never_touch_the_breaker(world: Maker) -> None:
    w = world(three_tiers(primary={"circuit": {"min_calls": 2, "half_open_probes": 1}}))
    for number in range(5):
        outcome = w.evaluate(failure(w.forwarded(request(request_id=f"b{number}")), BAD))
        assert outcome.breaker_events == ()
        assert outcome.forward is not None and outcome.forward.tier == "backup"
    assert w.circuits["primary"].snapshot(w.clock()).calls == 0
    # half-open: a bad request that took the probe hands it back, the circuit stays half-open
    w.fail("primary", 2)
    w.clock.advance(5)
    probe = w.forwarded(request(request_id="probe"))
    assert probe.tier == "primary"
    outcome = w.evaluate(failure(probe, BAD))
    assert outcome.breaker_events == (ReleaseProbe("primary"),)
    assert w.circuits["primary"].state is CircuitState.HALF_OPEN
    assert w.forwarded(request(request_id="next")).tier == "primary"


def test_a_call_skipped_at_call_time_is_a_verdict_without_a_call(world: Maker) -> None:
    w = world()
    routed = w.forwarded(request())
    w.fail("primary", 20)
    assert not call_may_start(w.ctx().circuits["primary"])
    skipped = skipped_call(routed, "primary-model", NOW + timedelta(milliseconds=40))
    outcome = w.evaluate(skipped)
    first = outcome.verdicts[0]
    assert (first.tier, first.called, first.trigger, first.next_tier) == (
        "primary",
        False,
        Trigger.CIRCUIT_OPEN,
        "backup",
    )
    assert (first.model, first.cost_usd, first.latency_ms) == (None, 0.0, 0.0)
    assert first.queue_wait_ms == pytest.approx(40.0)
    assert outcome.breaker_events == ()  # a call never made says nothing about health
    assert outcome.forward is not None
    assert (outcome.forward.tier, outcome.forward.attempt) == ("backup", 2)


def test_calls_may_start_unless_the_circuit_is_open(world: Maker) -> None:
    w = world(three_tiers(primary={"circuit": {"min_calls": 2}}))
    assert call_may_start(w.ctx().circuits["primary"])
    assert call_may_start(None)
    w.fail("primary", 2)
    assert not call_may_start(w.ctx().circuits["primary"])
    w.clock.advance(5)
    assert call_may_start(w.ctx().circuits["primary"])  # half-open: it may be the probe


def test_timeouts_are_recorded_as_slow_failures(world: Maker) -> None:
    w = world()
    outcome = w.evaluate(failure(w.forwarded(request()), Trigger.TIMEOUT, latency_ms=1000))
    assert outcome.breaker_events == (RecordCall("primary", CallOutcome(False, 1000.0, True)),)
