"""The `gateway:` section: what a bad one says, and that keys are read at start-up."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.errors import ConfigError
from streams.config import parse_config
from streams.gateway.keys import KeyRing, key_digest

DIGEST = "a" * 64
TIER = {"name": "primary", "adapter": {"kind": "digits", "model": "forest"}}


def config(gateway: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"tiers": [TIER], "gateway": gateway, **sections}


def key(**overrides: Any) -> dict[str, Any]:
    return {"name": "acme", "tenant": "acme", "key_sha256": DIGEST, **overrides}


def test_a_minimal_section_takes_the_defaults() -> None:
    gateway = parse_config(config({"keys": [key()]})).gateway
    assert gateway is not None
    assert (gateway.host, gateway.port, gateway.model) == ("127.0.0.1", 8080, "fallback")
    assert (gateway.default_timeout_ms, gateway.max_timeout_ms) == (30_000, 120_000)
    assert gateway.model_names() == ["fallback"]


def test_no_section_means_no_gateway() -> None:
    assert parse_config({"tiers": [TIER]}).gateway is None


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        ({"keys": []}, "gateway.keys: List should have at least 1 item"),
        ({"keys": [key(key_env="K")]}, "give exactly one of key_env and key_sha256"),
        ({"keys": [key(key_sha256=None)]}, "give exactly one of key_env and key_sha256"),
        ({"keys": [key(key_sha256="ABC")]}, "gateway.keys[0](acme).key_sha256"),
        ({"keys": [key(), key()]}, "name must be unique, repeated: ['acme']"),
        ({"keys": [key(), key(name="other")]}, "key_sha256 must be unique"),
        ({"keys": [key(requests_per_minute=0)]}, "requests_per_minute"),
        ({"keys": [key()], "colour": 1}, "gateway.colour: unknown key"),
        (
            {"keys": [key()], "default_timeout_ms": 5000, "max_timeout_ms": 1000},
            "gateway.default_timeout_ms (5000) is above gateway.max_timeout_ms (1000)",
        ),
        (
            {"keys": [key()], "replica_index": 2, "replica_count": 2},
            "gateway.replica_index (2) must be below gateway.replica_count (2)",
        ),
        (
            {"keys": [key()], "chains": {"fallback": {"tags": ["x"]}}},
            "'fallback' is already gateway.model",
        ),
    ],
)
def test_a_bad_section_fails_naming_the_field(gateway: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(gateway))
    assert message in str(caught.value)


def test_a_chain_must_select_a_policy_rule() -> None:
    gateway = {"keys": [key()], "chains": {"cheap": {"tags": ["chain-cheap"]}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(config(gateway))
    assert "gateway.chains.cheap: tags ['chain-cheap'] match no policy.rules[].tags" in str(
        caught.value
    )
    rule = {"name": "cheap", "tags": ["chain-cheap"], "allow_tiers": ["primary"]}
    parsed = parse_config(config(gateway, policy={"rules": [rule]}))
    assert parsed.gateway is not None and parsed.gateway.model_names() == ["fallback", "cheap"]


def test_keys_by_env_var_are_read_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = parse_config(config({"keys": [key(key_sha256=None, key_env="GW_KEY")]})).gateway
    assert gateway is not None
    monkeypatch.delenv("GW_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"gateway.keys\[acme\].key_env: environment variable"):
        KeyRing.from_config(gateway)
    monkeypatch.setenv("GW_KEY", " ")
    with pytest.raises(ConfigError, match="is empty"):
        KeyRing.from_config(gateway)
    monkeypatch.setenv("GW_KEY", "sk-secret")
    ring = KeyRing.from_config(gateway)
    caller = ring.caller("Bearer sk-secret")
    assert caller is not None and (caller.key_name, caller.tenant) == ("acme", "acme")


def test_keys_by_hash_and_what_does_not_authenticate() -> None:
    digest = key_digest("sk-right")
    gateway = parse_config(config({"keys": [key(key_sha256=digest)]})).gateway
    assert gateway is not None
    ring = KeyRing.from_config(gateway)
    assert ring.caller("Bearer sk-right") is not None
    assert ring.caller("bearer  sk-right ") is not None
    for header in (None, "", "Bearer", "Bearer ", "Basic sk-right", "sk-right", "Bearer sk-wrong"):
        assert ring.caller(header) is None, header
