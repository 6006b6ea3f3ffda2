"""Policy: which tiers may serve a request, decided from its attributes alone.

A rule matches a request when every attribute list it gives matches (tenant in
`tenants`, region in `regions`, any tag in `tags`; an empty list matches
anything). Matching rules compose by intersection, so adding a rule can only
narrow the tiers:

- `allow_tiers` keeps only those tiers;
- `deny_tiers` removes those;
- `same_region_only` keeps tiers whose `region` equals the request's region
  (a tier with no region, or a request with no region, fails closed: data that
  must stay in a region never goes somewhere unknown);
- `route_to_restricted` (or an input the safety check flagged) sends the
  request to `policy.restricted_tier` alone: policy fallback.

Tiers marked `restricted: true` only serve requests sent to the restricted tier.
Whatever survives keeps the configured priority order. When nothing survives,
the request cannot be served, and `denied` says why for every tier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.events import Request
from streams.config import FallbackConfig, PolicyRuleConfig, TierConfig

__all__ = ["PolicyDecision", "decide_policy", "rule_matches"]


@dataclass(frozen=True)
class PolicyDecision:
    allowed_tiers: tuple[str, ...]  # in priority order
    denied: dict[str, str] = field(default_factory=dict)  # tier -> first reason it was denied
    restricted: bool = False  # the request was sent to the restricted tier
    rule_names: list[str] = field(default_factory=list)  # rules that matched, in config order

    def allows(self, tier: str) -> bool:
        return tier in self.allowed_tiers


def rule_matches(rule: PolicyRuleConfig, request: Request) -> bool:
    if rule.tenants and request.tenant not in rule.tenants:
        return False
    if rule.regions and request.region not in rule.regions:
        return False
    return not rule.tags or any(tag in rule.tags for tag in request.tags)


def decide_policy(
    request: Request, config: FallbackConfig, input_unsafe: bool = False
) -> PolicyDecision:
    matched = [rule for rule in config.policy.rules if rule_matches(rule, request)]
    denied: dict[str, str] = {}

    def deny(tier: str, reason: str) -> None:
        denied.setdefault(tier, reason)  # the first reason is the one reported

    restricted_tier = config.policy.restricted_tier
    routing_rules = [rule.name for rule in matched if rule.route_to_restricted]
    restricted = input_unsafe or bool(routing_rules)
    if restricted:
        why = (
            "input flagged unsafe"
            if input_unsafe
            else f"rule {', '.join(routing_rules)} routes the request"
        )
        for tier in config.tiers:
            if restricted_tier is None:
                deny(tier.name, f"{why} and no policy.restricted_tier is configured")
            elif tier.name != restricted_tier:
                deny(tier.name, f"{why} to restricted tier {restricted_tier}")
    else:
        for tier in config.tiers:
            if tier.restricted:
                deny(tier.name, "restricted tier: serves only requests policy routes to it")

    for rule in matched:
        for tier in config.tiers:
            reason = _rule_denies(rule, tier, request)
            if reason is not None:
                deny(tier.name, f"rule {rule.name}: {reason}")

    return PolicyDecision(
        allowed_tiers=tuple(tier.name for tier in config.tiers if tier.name not in denied),
        denied=denied,
        restricted=restricted,
        rule_names=[rule.name for rule in matched],
    )


def _rule_denies(rule: PolicyRuleConfig, tier: TierConfig, request: Request) -> str | None:
    if rule.allow_tiers is not None and tier.name not in rule.allow_tiers:
        return f"tier {tier.name} is not in allow_tiers [{', '.join(rule.allow_tiers)}]"
    if tier.name in rule.deny_tiers:
        return f"tier {tier.name} is in deny_tiers"
    if rule.same_region_only:
        if request.region is None:
            return "same_region_only, but the request has no region"
        if tier.region is None:
            return f"tier {tier.name} has no region, request region is {request.region}"
        if tier.region != request.region:
            return f"tier region {tier.region} != request region {request.region}"
    return None
