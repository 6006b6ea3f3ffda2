"""The configuration: one YAML file read into frozen pydantic models.

Unknown keys are errors, units are in key names (`timeout_ms`, `max_cost_usd`),
secrets are referenced by environment variable name (`api_key_env`), and
cross-field checks name the keys they compare.  `streams/config/loading.py`
turns every validation failure into a `ConfigError` whose message names the field.
The analytics section is analytics/'s own model (`analytics/config.py`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import Field, SecretStr, model_validator

from analytics.config import AnalyticsConfig, Strict, secret_from_env
from schemas.errors import ConfigError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


# ---------------------------------------------------------------- Kafka ----


class TopicRetentionConfig(Strict):
    requests_hours: float = Field(default=168, gt=0)
    internal_hours: float = Field(default=24, gt=0)
    responses_hours: float = Field(default=168, gt=0)
    dlq_hours: float = Field(default=720, gt=0)


#: the stage group's session timeout when none is configured, on the embedded
#: broker and elsewhere: Tansu holds every JoinGroup reply until half the session
#: timeout has passed, so there a join takes 1 s instead of 5 s; real Kafka
#: refuses session timeouts below 6 s by default (group.min.session.timeout.ms)
EMBEDDED_SESSION_TIMEOUT_S = 2.0
DEFAULT_SESSION_TIMEOUT_S = 10.0
#: topic rotation on the embedded broker when none is configured: at 200 req/s
#: 60-minute soaks held with it (bench/README.md), where without rotation p99
#: passed 1 s in 2 minutes; a period of minutes would let each generation slow down
EMBEDDED_TOPIC_ROTATION_S = 10.0
#: shorter periods leave too little of one for preparing the next generation
MIN_TOPIC_ROTATION_S = 2.0
#: the heartbeat when none is configured: a quarter of the session, at most this
DEFAULT_HEARTBEAT_INTERVAL_S = 1.0


class GroupTimings(NamedTuple):
    session_timeout_s: float
    heartbeat_interval_s: float


class KafkaConfig(Strict):
    bootstrap_servers: str | None = Field(
        default=None,
        description="host:port[,host:port]; null means the embedded broker the CLI starts",
    )
    topic_prefix: str = Field(default="fallback.", pattern=r"^[A-Za-z0-9._-]*$")
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    retention: TopicRetentionConfig = TopicRetentionConfig()
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password_env: str | None = None
    ssl_cafile: str | None = Field(default=None, description="CA bundle; default: system trust")
    ssl_certfile: str | None = Field(default=None, description="client certificate (mTLS)")
    ssl_keyfile: str | None = Field(default=None, description="client key (mTLS)")
    fetch_max_wait_ms: int = Field(default=10, ge=0, le=5000)
    max_partition_fetch_bytes: int = Field(default=64 * 1024, ge=1024)
    session_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="stage group session timeout; null: 2 on the embedded broker, 10 elsewhere",
    )
    heartbeat_interval_s: float | None = Field(
        default=None, gt=0, description="null: a quarter of the session timeout, at most 1"
    )
    rebalance_timeout_s: float = Field(default=10.0, gt=0)
    commit_interval_s: float = Field(default=1.0, gt=0)
    topic_rotation_s: float | None = Field(
        default=None,
        ge=0,
        description=(
            "the embedded broker's retention: every this many seconds the pipeline's topics "
            "move to a new generation, <name>.g<N>, and read-out generations are deleted "
            "(topics/generations.py); the plain requests topic is still served. "
            f"null: {EMBEDDED_TOPIC_ROTATION_S:g} on the embedded broker, off elsewhere; 0: off"
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> KafkaConfig:
        session = self.session_timeout_s or DEFAULT_SESSION_TIMEOUT_S
        if self.heartbeat_interval_s is not None and self.heartbeat_interval_s >= session:
            raise ValueError(
                "kafka.heartbeat_interval_s must be below kafka.session_timeout_s "
                f"({self.heartbeat_interval_s} >= {session})"
            )
        if self.topic_rotation_s is not None and 0 < self.topic_rotation_s < MIN_TOPIC_ROTATION_S:
            raise ValueError(
                f"kafka.topic_rotation_s must be 0 (off) or at least {MIN_TOPIC_ROTATION_S:g} "
                f"seconds, not {self.topic_rotation_s}"
            )
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password_env
        ):
            raise ValueError(
                "kafka.security_protocol SASL_* needs kafka.sasl_mechanism, "
                "kafka.sasl_username and kafka.sasl_password_env"
            )
        return self

    def sasl_password(self) -> SecretStr | None:
        return secret_from_env(self.sasl_password_env, "kafka.sasl_password_env")

    def rotation_period(self, embedded_broker: bool) -> float | None:
        """Seconds per topic generation, or None for the plain names only."""
        if self.topic_rotation_s is None:
            return EMBEDDED_TOPIC_ROTATION_S if embedded_broker else None
        return self.topic_rotation_s or None

    def group_timings(self, embedded_broker: bool = False) -> GroupTimings:
        """The stage group's session timeout and heartbeat, defaults filled in."""
        default = EMBEDDED_SESSION_TIMEOUT_S if embedded_broker else DEFAULT_SESSION_TIMEOUT_S
        session = self.session_timeout_s or default
        heartbeat = self.heartbeat_interval_s or min(DEFAULT_HEARTBEAT_INTERVAL_S, session / 4)
        if heartbeat >= session:
            raise ConfigError(
                f"kafka.heartbeat_interval_s {heartbeat} must be below the session timeout "
                f"{session} s the embedded broker gets by default: set kafka.session_timeout_s"
            )
        return GroupTimings(session, heartbeat)


# --------------------------------------------------------------- worker ----


class WorkerConfig(Strict):
    app_id: str = Field(default="model-fallback", pattern=r"^[A-Za-z0-9._-]+$")
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)
    max_request_bytes: int = Field(
        default=900_000,
        ge=256,
        le=900_000,
        description="larger requests are answered invalid; below the producer's 1 MB record "
        "limit with room for what the pipeline adds (history, envelope), so a valid request's "
        "forward always fits",
    )
    max_request_depth: int = Field(
        default=64, ge=2, le=500, description="JSON nesting of a request (outer object: 1)"
    )
    max_deadline_ms: int = Field(default=86_400_000, ge=1, description="largest deadline_ms")
    created_at_max_age_s: float = Field(
        default=604_800, gt=0, le=3.2e8, description="oldest created_at accepted, before now"
    )
    created_at_max_ahead_s: float = Field(
        default=300, ge=0, le=3.2e8, description="created_at accepted after now (clock skew)"
    )
    dedupe_window_s: float = Field(default=600.0, ge=0)
    max_queued_records: int = Field(
        default=2000,
        ge=1,
        description="records waiting in this worker's tier and attempts partitions "
        "above which it stops taking new requests",
    )
    data_dir: str = Field(default=".data", description="worker-local state (Faust's data dir)")
    stuck_after_s: float | None = Field(
        default=120.0,
        gt=0,
        description="a partition whose oldest unfinished record was fetched this long ago "
        "(still being handled, or stalled), or no commit succeeding for this long, makes "
        "the worker exit with code 1 for its supervisor to restart it; null: never",
    )
    shutdown_grace_s: float = Field(
        default=5.0,
        ge=2.0,
        description="on SIGTERM the worker exits within this long: running records get "
        "all of it but 2 s (commit, leave, close) to finish; the rest is re-read by "
        "the partitions' next owner",
    )
    response_format: Literal["json", "avro"] = Field(
        default="json", description="encoding of <prefix>responses (schemas/avro/response.avsc)"
    )


# --------------------------------------------------------------- models ----


class DigitsModelConfig(Strict):
    """A real scikit-learn classifier trained on the bundled digits data."""

    kind: Literal["digits"]
    model: Literal["forest", "logistic", "naive_bayes"]
    cache_dir: str = ".data/models"


class PythonCallableConfig(Strict):
    """Any Python callable `module:function`; blocking functions run in a thread pool."""

    kind: Literal["python"]
    callable: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    model_name: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class OpenAIChatConfig(Strict):
    """An OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM)."""

    kind: Literal["openai_chat"]
    base_url: str = Field(description="e.g. https://api.openai.com/v1")
    model: str
    api_key_env: str | None = Field(default=None, description="env var holding the API key")
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict, description="temperature, top_p, ...")
    stream: bool = True
    first_token_timeout_ms: float | None = Field(default=None, gt=0)
    stall_timeout_ms: float | None = Field(default=None, gt=0)
    logprobs: bool = False
    confidence_from: Literal["mean_token_prob", "p10_token_prob"] = "mean_token_prob"

    def api_key(self) -> SecretStr | None:
        return secret_from_env(self.api_key_env, "adapter.api_key_env")


class OpenInferenceConfig(Strict):
    """A classic model behind KServe v2 / Open Inference Protocol (`/v2/models/<name>/infer`)."""

    kind: Literal["open_inference"]
    base_url: str
    model_name: str
    model_version: str | None = None
    input_name: str = "input-0"
    input_datatype: Literal["FP32", "FP64", "INT32", "INT64", "BYTES"] = "FP32"
    headers: dict[str, str] = Field(default_factory=dict)
    api_key_env: str | None = None

    def api_key(self) -> SecretStr | None:
        return secret_from_env(self.api_key_env, "adapter.api_key_env")


AdapterConfig = Annotated[
    DigitsModelConfig | PythonCallableConfig | OpenAIChatConfig | OpenInferenceConfig,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------- tiers ----


class PriceConfig(Strict):
    per_call_usd: float = Field(default=0.0, ge=0)
    per_1k_input_tokens_usd: float = Field(default=0.0, ge=0)
    per_1k_output_tokens_usd: float = Field(default=0.0, ge=0)

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (
            self.per_call_usd
            + tokens_in / 1000 * self.per_1k_input_tokens_usd
            + tokens_out / 1000 * self.per_1k_output_tokens_usd
        )


class QualityCheckConfig(Strict):
    """One pluggable quality evaluator, by name."""

    check: Literal["non_empty", "json", "json_schema", "callable"]
    json_schema: dict[str, Any] | None = None
    callable: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    min_score: float = Field(default=0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> QualityCheckConfig:
        if self.check == "json_schema" and self.json_schema is None:
            raise ValueError("check json_schema needs the json_schema key")
        if self.check == "callable" and self.callable is None:
            raise ValueError("check callable needs the callable key (module:function)")
        return self


class AcceptanceConfig(Strict):
    """Accept = latency < max_latency_ms and confidence >= min_confidence and safe and cost ok."""

    max_latency_ms: float | None = Field(default=None, gt=0)
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    safety: bool = False
    max_cost_usd: float | None = Field(default=None, ge=0)
    quality: list[QualityCheckConfig] = Field(default_factory=list)


class OutageConfig(Strict):
    """The tier is down from `start_s` for `duration_s` after its first call, every `every_s`."""

    start_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    every_s: float | None = Field(default=None, gt=0)


class FaultsConfig(Strict):
    """Fault injection for demos and drills; wraps any adapter."""

    error_rate: float = Field(default=0.0, ge=0, le=1)
    added_latency_ms: float = Field(default=0.0, ge=0)
    spike_rate: float = Field(default=0.0, ge=0, le=1)
    spike_latency_ms: float = Field(default=0.0, ge=0)
    outages: list[OutageConfig] = Field(default_factory=list)
    seed: int | None = None


class CircuitConfig(Strict):
    """Per-tier circuit breaker over a sliding window of outcomes (defaults after Hystrix)."""

    enabled: bool = True
    window_s: float = Field(default=10.0, gt=0)
    min_calls: int = Field(default=20, ge=1)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    p95_latency_ms: float | None = Field(default=None, gt=0)
    open_s: float = Field(default=5.0, gt=0)
    half_open_probes: int = Field(default=3, ge=1)
    slow_call_ms: float | None = Field(
        default=None, gt=0, description="a call this long or longer is slow; timeouts always are"
    )
    slow_call_rate: float = Field(default=0.8, gt=0, le=1)
    min_slow_calls: int = Field(
        default=5, ge=1, description="slow calls needed to open (capped at min_calls)"
    )


class RetryConfig(Strict):
    """Retries of transient errors on the same tier: exponential backoff, full jitter."""

    max_retries: int = Field(default=0, ge=0, le=10)
    initial_backoff_ms: float = Field(default=100.0, ge=0)
    max_backoff_ms: float = Field(default=5000.0, ge=0)
    max_retry_after_ms: float = Field(default=30000.0, ge=0)
    rate_limited_floor_ms: float = Field(
        default=1000.0, ge=0, description="a 429 without Retry-After waits at least this long"
    )


class TierConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    adapter: AdapterConfig
    price: PriceConfig = PriceConfig()
    timeout_ms: float = Field(default=2000.0, gt=0)
    max_in_flight: int = Field(default=100, ge=1, le=10_000)
    default_confidence: float | None = Field(default=None, ge=0, le=1)
    context_window_tokens: int | None = Field(default=None, gt=0)
    region: str | None = None
    restricted: bool = Field(
        default=False, description="only serves requests that policy sends to it"
    )
    accept: AcceptanceConfig = AcceptanceConfig()
    faults: FaultsConfig | None = None
    circuit: CircuitConfig = CircuitConfig()
    retry: RetryConfig = RetryConfig()

    @model_validator(mode="after")
    def _check(self) -> TierConfig:
        limit = self.accept.max_latency_ms
        if limit is not None and limit > self.timeout_ms:
            raise ValueError(
                f"accept.max_latency_ms ({limit}) is above timeout_ms ({self.timeout_ms}): "
                "an answer that slow is cut off by the timeout first"
            )
        return self


# ------------------------------------------------------- budgets/policy ----


class TenantBudgetConfig(Strict):
    usd: float = Field(gt=0)
    window_s: float = Field(default=3600.0, gt=0)
    expensive_above_usd: float = Field(
        default=0.0,
        ge=0,
        description="once the budget is spent, tiers priced above this per call are skipped",
    )


class BudgetsConfig(Strict):
    default: TenantBudgetConfig | None = None
    tenants: dict[str, TenantBudgetConfig] = Field(default_factory=dict)

    def for_tenant(self, tenant: str) -> TenantBudgetConfig | None:
        return self.tenants.get(tenant, self.default)


class PolicyRuleConfig(Strict):
    """Requests matching every given attribute are restricted as below."""

    name: str
    tenants: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    allow_tiers: list[str] | None = None
    deny_tiers: list[str] = Field(default_factory=list)
    same_region_only: bool = False
    route_to_restricted: bool = False


class PolicyConfig(Strict):
    rules: list[PolicyRuleConfig] = Field(default_factory=list)
    restricted_tier: str | None = None
    input_safety: bool = False
    deny_patterns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> PolicyConfig:
        for pattern in self.deny_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"policy.deny_patterns: {pattern!r} is not a regex: {exc}"
                ) from exc
        return self


class SafetyConfig(Strict):
    """Output safety: a trained profanity classifier plus deny patterns."""

    classifier: bool = True
    max_unsafe_probability: float = Field(default=0.5, ge=0, le=1)
    deny_patterns: list[str] = Field(default_factory=list)


# -------------------------------------------------------------- gateway ----


class GatewayKeyConfig(Strict):
    """One API key of the HTTP gateway: who it belongs to, never what it is."""

    name: str = Field(pattern=NAME_PATTERN, description="label in logs and metrics")
    tenant: str = Field(min_length=1, max_length=128)
    key_env: str | None = Field(default=None, description="env var holding the key")
    key_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key"
    )
    requests_per_minute: int | None = Field(default=None, ge=1)
    max_in_flight: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> GatewayKeyConfig:
        if (self.key_env is None) == (self.key_sha256 is None):
            raise ValueError(f"key {self.name}: give exactly one of key_env and key_sha256")
        return self

    def key(self) -> SecretStr | None:
        return secret_from_env(self.key_env, f"gateway.keys[{self.name}].key_env")


class GatewayChainConfig(Strict):
    """A model name for part of the tier chain: the tags it adds select policy rules."""

    tags: list[str] = Field(min_length=1)


class GatewayConfig(Strict):
    """The OpenAI-compatible HTTP gateway (`fallback gateway`, docs/gateway.md)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    model: str = Field(
        default="fallback", min_length=1, max_length=128, description="the whole tier chain"
    )
    chains: dict[str, GatewayChainConfig] = Field(default_factory=dict)
    keys: list[GatewayKeyConfig] = Field(min_length=1)
    default_timeout_ms: int = Field(default=30_000, gt=0)
    max_timeout_ms: int = Field(default=120_000, gt=0)
    stream_keepalive_ms: int | None = Field(
        default=None,
        gt=0,
        description="start a waiting stream after this long and send keep-alive comments "
        "(the status is then 200 and a failure arrives as an error event)",
    )
    replica_index: int = Field(default=0, ge=0)
    replica_count: int = Field(default=1, ge=1, le=1024)

    @model_validator(mode="after")
    def _check(self) -> GatewayConfig:
        if self.default_timeout_ms > self.max_timeout_ms:
            raise ValueError(
                f"gateway.default_timeout_ms ({self.default_timeout_ms}) is above "
                f"gateway.max_timeout_ms ({self.max_timeout_ms})"
            )
        if self.replica_index >= self.replica_count:
            raise ValueError(
                f"gateway.replica_index ({self.replica_index}) must be below "
                f"gateway.replica_count ({self.replica_count})"
            )
        if self.model in self.chains:
            raise ValueError(f"gateway.chains: {self.model!r} is already gateway.model")
        for what in ("name", "key_env", "key_sha256"):
            values = [getattr(k, what) for k in self.keys if getattr(k, what) is not None]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                shown = repeated if what == "name" else [f"{len(repeated)} value(s)"]
                raise ValueError(f"gateway.keys: {what} must be unique, repeated: {shown}")
        return self

    def model_names(self) -> list[str]:
        return [self.model, *self.chains]


# ---------------------------------------------------------------- root -----


class FallbackConfig(Strict):
    kafka: KafkaConfig = KafkaConfig()
    analytics: AnalyticsConfig = AnalyticsConfig()
    worker: WorkerConfig = WorkerConfig()
    tiers: list[TierConfig] = Field(min_length=1)
    budgets: BudgetsConfig = BudgetsConfig()
    policy: PolicyConfig = PolicyConfig()
    safety: SafetyConfig = SafetyConfig()
    gateway: GatewayConfig | None = None

    @model_validator(mode="after")
    def _data_paths_follow_data_dir(self) -> FallbackConfig:
        """Unset data paths live under `worker.data_dir`, so one key moves them all."""
        if self.analytics.chdb_path is None:
            chdb_path = str(Path(self.worker.data_dir) / "chdb")
            analytics = self.analytics.model_copy(update={"chdb_path": chdb_path})
            object.__setattr__(self, "analytics", analytics)  # frozen: set once, while validating
        return self

    @model_validator(mode="after")
    def _check(self) -> FallbackConfig:
        names = [tier.name for tier in self.tiers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tiers: names must be unique, repeated: {', '.join(duplicates)}")
        known = set(names)
        restricted = self.policy.restricted_tier
        if restricted is not None and restricted not in known:
            raise ValueError(f"policy.restricted_tier {restricted!r} is not a tier ({names})")
        for rule in self.policy.rules:
            for tier in [*(rule.allow_tiers or []), *rule.deny_tiers]:
                if tier not in known:
                    raise ValueError(f"policy.rules[{rule.name}]: unknown tier {tier!r}")
            if rule.route_to_restricted and restricted is None:
                raise ValueError(
                    f"policy.rules[{rule.name}].route_to_restricted needs policy.restricted_tier"
                )
        if all(tier.restricted for tier in self.tiers):
            raise ValueError("tiers: at least one tier must not be restricted")
        if self.gateway is not None:
            rule_tags = {tag for rule in self.policy.rules for tag in rule.tags}
            for chain, settings in self.gateway.chains.items():
                unmatched = [tag for tag in settings.tags if tag not in rule_tags]
                if unmatched:
                    raise ValueError(
                        f"gateway.chains.{chain}: tags {unmatched} match no policy.rules[].tags, "
                        "so this model name would be the whole chain"
                    )
        return self

    @property
    def primary_tier(self) -> str:
        """The tier every request tries first: the counterfactual's "primary alone"."""
        return next(tier.name for tier in self.tiers if not tier.restricted)

    def tier(self, name: str) -> TierConfig:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)

    def with_bootstrap(self, bootstrap_servers: str) -> FallbackConfig:
        kafka = self.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
        return self.model_copy(update={"kafka": kafka})
