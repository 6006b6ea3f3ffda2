"""End to end on the real embedded broker, a real worker process and real chDB:
each fallback trigger, the tier that serves, and the verdict path the caller sees."""

from __future__ import annotations

import pytest

from schemas.events import UNAVAILABLE_MESSAGE, FallbackType, Trigger
from tests.pipeline.harness import PipelineHarness, triggers

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_primary_serves_when_it_is_accepted(shared_pipeline: PipelineHarness) -> None:
    response = await shared_pipeline.ask()
    assert response.status == "served" and response.served_by == "primary"
    assert triggers(response) == [("primary", None)]
    assert response.cost_usd == pytest.approx(0.01)
    assert response.output == {"content": "primary answer", "tier": "primary"}


async def test_model_error_falls_to_the_next_tier(shared_pipeline: PipelineHarness) -> None:
    response = await shared_pipeline.ask({"primary": "error"})
    assert response.served_by == "backup"
    first = response.attempts[0]
    assert (first.tier, first.trigger, first.fallback_type) == (
        "primary",
        Trigger.ERROR,
        FallbackType.RELIABILITY,
    )
    assert "primary is broken" in first.reasons[0]


async def test_low_confidence_falls_through(shared_pipeline: PipelineHarness) -> None:
    response = await shared_pipeline.ask({"primary": "conf:0.3", "backup": "conf:0.5"})
    assert response.served_by == "local"
    assert triggers(response) == [
        ("primary", "low_confidence"),
        ("backup", "low_confidence"),
        ("local", None),
    ]
    assert response.attempts[0].fallback_type is FallbackType.QUALITY
    assert "confidence 0.300 < 0.8" in response.attempts[0].reasons


async def test_slow_answer_is_a_latency_fallback(shared_pipeline: PipelineHarness) -> None:
    response = await shared_pipeline.ask({"primary": "sleep:400"})
    assert response.served_by == "backup"
    first = response.attempts[0]
    assert (first.trigger, first.fallback_type) == (Trigger.SLOW, FallbackType.LATENCY)
    assert first.latency_ms >= 400


async def test_timeout_is_a_rejected_attempt(shared_pipeline: PipelineHarness) -> None:
    response = await shared_pipeline.ask({"primary": "sleep:3000"})
    assert response.served_by == "backup"
    first = response.attempts[0]
    # a timeout is retryable: one retry on the same tier, then fallback
    assert [a.trigger for a in response.attempts[:2]] == [Trigger.TIMEOUT, Trigger.TIMEOUT]
    assert "no answer within 1000 ms" in first.reasons[0]
    assert 950 <= first.latency_ms < 2000


async def test_every_tier_rejecting_is_unavailable(shared_pipeline: PipelineHarness) -> None:
    response = await shared_pipeline.ask(
        {"primary": "error", "backup": "error", "local": "conf:0.1"}
    )
    assert response.status == "unavailable"
    assert response.message == UNAVAILABLE_MESSAGE
    assert response.served_by is None and response.output is None and response.model is None
    # primary's error is transient: retried once on the same tier before falling back
    assert [a.tier for a in response.attempts] == ["primary", "primary", "backup", "local"]
    assert all(a.reasons and not a.accepted for a in response.attempts)
    assert response.cost_usd == 0  # failed calls are not charged; local's answer was free


async def test_retry_on_rate_limit_then_fallback(shared_pipeline: PipelineHarness) -> None:
    response = await shared_pipeline.ask({"primary": "rate_limited:0.2"})
    assert triggers(response) == [
        ("primary", "rate_limited"),
        ("primary", "rate_limited"),
        ("backup", None),
    ]
    # the retry waited for Retry-After (200 ms) before calling again
    assert response.latency_ms >= 200
    assert [a.attempt for a in response.attempts] == [1, 2, 3]


async def test_unsafe_output_goes_to_the_restricted_tier(shared_pipeline: PipelineHarness) -> None:
    response = await shared_pipeline.ask({"primary": "unsafe"})
    assert response.served_by == "restricted"
    first = response.attempts[0]
    assert (first.trigger, first.fallback_type) == (Trigger.UNSAFE, FallbackType.QUALITY)


async def test_unsafe_prompt_is_routed_to_the_restricted_tier(
    shared_pipeline: PipelineHarness,
) -> None:
    response = await shared_pipeline.ask(
        input={"messages": [{"role": "user", "content": "you fucking idiot, shut up"}]}
    )
    assert response.served_by == "restricted"
    assert triggers(response) == [("restricted", None)]


async def test_provider_content_policy_is_a_policy_fallback(
    shared_pipeline: PipelineHarness,
) -> None:
    response = await shared_pipeline.ask({"primary": "content_policy"})
    assert response.served_by == "restricted"
    first = response.attempts[0]
    assert (first.trigger, first.fallback_type) == (Trigger.POLICY, FallbackType.POLICY)
    assert "content_policy_violation" in first.reasons[0]
    assert len([a for a in response.attempts if a.tier == "primary"]) == 1  # never retried


async def test_region_policy_skips_tiers_outside_the_region(
    shared_pipeline: PipelineHarness,
) -> None:
    response = await shared_pipeline.ask(region="eu")
    assert response.served_by == "backup"
    skipped = response.attempts[0]
    assert (skipped.tier, skipped.trigger, skipped.called) == ("primary", Trigger.POLICY, False)
    assert skipped.cost_usd == 0 and "eu-data" in skipped.reasons[0]


async def test_empty_answer_fails_the_quality_check(shared_pipeline: PipelineHarness) -> None:
    response = await shared_pipeline.ask({"primary": "error", "backup": "empty"})
    assert response.served_by == "local"
    backup = next(a for a in response.attempts if a.tier == "backup")
    assert (backup.trigger, backup.fallback_type) == (Trigger.INVALID_OUTPUT, FallbackType.QUALITY)


async def test_spent_tenant_budget_skips_expensive_tiers(shared_pipeline: PipelineHarness) -> None:
    first = await shared_pipeline.ask(tenant="skint")
    assert first.served_by == "primary"  # $0.01 spends the tenant's $0.005 budget
    second = await shared_pipeline.ask(tenant="skint")
    assert second.served_by == "backup"
    skipped = second.attempts[0]
    assert (skipped.trigger, skipped.fallback_type, skipped.called) == (
        Trigger.OVER_BUDGET,
        FallbackType.COST,
        False,
    )
    other_tenant = await shared_pipeline.ask(tenant="rich")
    assert other_tenant.served_by == "primary"


async def test_request_max_cost_skips_tiers_it_cannot_afford(
    shared_pipeline: PipelineHarness,
) -> None:
    response = await shared_pipeline.ask(max_cost_usd=0.002)
    assert response.served_by == "backup"
    assert response.attempts[0].trigger is Trigger.OVER_BUDGET


async def test_deadline_cuts_the_call_short_and_answers_at_once(
    shared_pipeline: PipelineHarness,
) -> None:
    response = await shared_pipeline.ask({"primary": "sleep:3000"}, deadline_ms=600)
    assert response.status == "unavailable"
    assert response.within_deadline is False
    assert response.attempts[0].trigger is Trigger.TIMEOUT
    assert response.attempts[0].latency_ms < 900  # the 1000 ms timeout was shortened
    assert response.attempts[-1].trigger is Trigger.DEADLINE
    assert response.latency_ms < 2000


async def test_hallucination_detector_rejects_the_answer(shared_pipeline: PipelineHarness) -> None:
    response = await shared_pipeline.ask({"primary": "hallucinate"})
    assert response.served_by == "backup"
    first = response.attempts[0]
    assert (first.trigger, first.fallback_type) == (Trigger.HALLUCINATION, FallbackType.QUALITY)
    assert "score 0.1 < min_score 0.5: claim not supported by any source" in first.reasons[0]
