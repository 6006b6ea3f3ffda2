from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import ConfigError
from streams.config import load_config, parse_config

EXAMPLES = sorted(Path("examples").glob("*.yaml"))


def tier(**overrides: object) -> dict[str, object]:
    return {"name": "primary", "adapter": {"kind": "digits", "model": "forest"}, **overrides}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_are_valid(path: Path) -> None:
    config = load_config(path)
    assert config.tiers


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"tiers": [tier(accept={"min_confidence": 1.5})]},
            "tiers[0](primary).accept.min_confidence: Input should be less than or equal to 1",
        ),
        ({"tiers": [tier(surprise=1)]}, "tiers[0](primary).surprise: unknown key"),
        (
            {"tiers": [tier(adapter={"kind": "digits", "model": "svm"})]},
            "tiers[0](primary).adapter.model",
        ),
        ({"tiers": [tier(), tier()]}, "names must be unique, repeated: primary"),
        (
            {"tiers": [tier(timeout_ms=100, accept={"max_latency_ms": 500})]},
            "accept.max_latency_ms (500.0) is above timeout_ms (100.0)",
        ),
        (
            {"tiers": [tier()], "policy": {"restricted_tier": "nope"}},
            "policy.restricted_tier 'nope' is not a tier",
        ),
        ({"tiers": []}, "tiers: List should have at least 1 item"),
        (
            {"tiers": [tier()], "kafka": {"heartbeat_interval_s": 20}},
            "kafka.heartbeat_interval_s must be below kafka.session_timeout_s",
        ),
        (
            {"tiers": [tier(accept={"quality": [{"check": "json_schema"}]})]},
            "check json_schema needs the json_schema key",
        ),
        (
            {"tiers": [tier()], "kafka": {"topic_rotation_s": 1}},
            "kafka.topic_rotation_s must be 0 (off) or at least 2 seconds, not 1",
        ),
    ],
)
def test_bad_config_fails_naming_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert message in str(caught.value)


def test_unreadable_and_non_yaml_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiers: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_secrets_come_from_the_named_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = parse_config(
        {"tiers": [tier()], "analytics": {"backend": "clickhouse", "password_env": "CH_PW"}}
    )
    monkeypatch.delenv("CH_PW", raising=False)
    with pytest.raises(ConfigError, match="CH_PW is not set"):
        config.analytics.password()
    monkeypatch.setenv("CH_PW", "s3cret")
    password = config.analytics.password()
    assert password is not None and password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in str(password)


def test_group_timings_default_short_on_the_embedded_broker_only() -> None:
    kafka = parse_config({"tiers": [tier()]}).kafka
    # Tansu holds each join for half the session: 2 s there; real Kafka needs >= 6 s.
    assert kafka.group_timings(embedded_broker=True) == (2.0, 0.5)
    assert kafka.group_timings(embedded_broker=False) == (10.0, 1.0)
    chosen = parse_config({"tiers": [tier()], "kafka": {"session_timeout_s": 6}}).kafka
    assert chosen.group_timings(embedded_broker=True) == (6.0, 1.0)
    slow_heartbeat = parse_config({"tiers": [tier()], "kafka": {"heartbeat_interval_s": 3}}).kafka
    with pytest.raises(ConfigError, match=r"set kafka\.session_timeout_s"):
        slow_heartbeat.group_timings(embedded_broker=True)


def test_topic_rotation_defaults_to_ten_seconds_on_the_embedded_broker_only() -> None:
    kafka = parse_config({"tiers": [tier()]}).kafka
    assert kafka.rotation_period(embedded_broker=True) == 10.0
    assert kafka.rotation_period(embedded_broker=False) is None
    off = parse_config({"tiers": [tier()], "kafka": {"topic_rotation_s": 0}}).kafka
    assert off.rotation_period(embedded_broker=True) is None
    chosen = parse_config({"tiers": [tier()], "kafka": {"topic_rotation_s": 30}}).kafka
    assert chosen.rotation_period(embedded_broker=False) == 30.0
