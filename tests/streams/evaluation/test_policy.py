"""Policy rules on tenant, region and tags; the restricted tier."""

from __future__ import annotations

from typing import Any

from schemas.events import Request
from streams.config import FallbackConfig, parse_config
from streams.evaluation.policy import PolicyDecision, decide_policy

ADAPTER = {"kind": "python", "callable": "tests.streams.evaluation.sample_quality:constant_score"}


def config(rules: list[dict[str, Any]], restricted_tier: str | None = "safe") -> FallbackConfig:
    return parse_config(
        {
            "tiers": [
                {"name": "primary", "adapter": ADAPTER, "region": "us"},
                {"name": "backup", "adapter": ADAPTER, "region": "eu"},
                {"name": "local", "adapter": ADAPTER},
                {"name": "safe", "adapter": ADAPTER, "region": "eu", "restricted": True},
            ],
            "policy": {"rules": rules, "restricted_tier": restricted_tier},
        }
    )


def request(**fields: Any) -> Request:
    return Request(request_id="r1", input={"prompt": "hi"}, **fields)


def test_no_rules_allows_every_unrestricted_tier_in_order() -> None:
    decision = decide_policy(request(), config([]))
    assert decision == PolicyDecision(
        allowed_tiers=("primary", "backup", "local"),
        denied={"safe": "restricted tier: serves only requests policy routes to it"},
        restricted=False,
        rule_names=[],
    )


def test_same_region_only_keeps_tiers_in_the_request_region() -> None:
    rules = [{"name": "eu-data", "regions": ["eu"], "same_region_only": True}]
    decision = decide_policy(request(region="eu"), config(rules))
    assert decision.allowed_tiers == ("backup",)
    assert decision.denied["primary"] == "rule eu-data: tier region us != request region eu"
    assert (
        decision.denied["local"] == "rule eu-data: tier local has no region, request region is eu"
    )
    assert decision.rule_names == ["eu-data"]
    # The rule does not match a US request.
    assert decide_policy(request(region="us"), config(rules)).allowed_tiers == (
        "primary",
        "backup",
        "local",
    )


def test_same_region_only_fails_closed_without_a_request_region() -> None:
    rules = [{"name": "pii", "tags": ["pii"], "same_region_only": True}]
    decision = decide_policy(request(tags=["pii"]), config(rules))
    assert decision.allowed_tiers == ()
    assert decision.denied["backup"] == "rule pii: same_region_only, but the request has no region"


def test_every_given_attribute_must_match() -> None:
    rules = [
        {"name": "acme-pii", "tenants": ["acme"], "tags": ["pii", "phi"], "deny_tiers": ["primary"]}
    ]
    cfg = config(rules)
    assert decide_policy(request(tenant="acme", tags=["x", "phi"]), cfg).rule_names == ["acme-pii"]
    assert decide_policy(request(tenant="acme", tags=["x"]), cfg).rule_names == []
    assert decide_policy(request(tenant="other", tags=["pii"]), cfg).rule_names == []
    denied = decide_policy(request(tenant="acme", tags=["pii"]), cfg)
    assert denied.allowed_tiers == ("backup", "local")
    assert denied.denied["primary"] == "rule acme-pii: tier primary is in deny_tiers"


def test_allow_tiers_narrows_and_rules_compose_by_intersection() -> None:
    rules = [
        {"name": "cheap-only", "tenants": ["free"], "allow_tiers": ["backup", "local"]},
        {"name": "no-local", "deny_tiers": ["local"]},
    ]
    decision = decide_policy(request(tenant="free"), config(rules))
    assert decision.allowed_tiers == ("backup",)
    assert (
        decision.denied["primary"]
        == "rule cheap-only: tier primary is not in allow_tiers [backup, local]"
    )
    assert decision.denied["local"] == "rule no-local: tier local is in deny_tiers"
    assert decision.rule_names == ["cheap-only", "no-local"]


def test_route_to_restricted_sends_only_to_the_restricted_tier() -> None:
    rules = [{"name": "flagged", "tags": ["flagged"], "route_to_restricted": True}]
    decision = decide_policy(request(tags=["flagged"]), config(rules))
    assert decision.allowed_tiers == ("safe",)
    assert decision.restricted
    assert decision.denied["primary"] == "rule flagged routes the request to restricted tier safe"


def test_unsafe_input_goes_to_the_restricted_tier() -> None:
    decision = decide_policy(request(), config([]), input_unsafe=True)
    assert decision.allowed_tiers == ("safe",)
    assert decision.restricted
    assert decision.denied["backup"] == "input flagged unsafe to restricted tier safe"


def test_unsafe_input_without_a_restricted_tier_is_not_served() -> None:
    decision = decide_policy(request(), config([], restricted_tier=None), input_unsafe=True)
    assert decision.allowed_tiers == ()
    assert decision.denied["primary"] == (
        "input flagged unsafe and no policy.restricted_tier is configured"
    )


def test_region_rules_still_apply_to_the_restricted_tier() -> None:
    rules = [
        {"name": "us-data", "regions": ["us"], "same_region_only": True},
        {"name": "flagged", "tags": ["flagged"], "route_to_restricted": True},
    ]
    decision = decide_policy(request(region="us", tags=["flagged"]), config(rules))
    assert decision.allowed_tiers == ()
    assert decision.denied["safe"] == "rule us-data: tier region eu != request region us"
    assert not decision.allows("safe")
