"""Pydantic models of every event on every topic.

The public contract (README, "Request and response JSON") is `Request` on the
requests topic and `Response` on the responses topic.  Everything else is
internal and travels as Avro (see `schemas/avro/*.avsc`, kept field-for-field
in step with these models by `tests/schemas/test_avro_agreement.py`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1
UNAVAILABLE_MESSAGE = "Unable to generate reliable response."


def utc_now() -> datetime:
    return datetime.now(UTC)


class Trigger(StrEnum):
    """Why an attempt was rejected (or a tier skipped)."""

    TIMEOUT = "timeout"
    ERROR = "error"
    #: the request itself was refused (adapter input rejection, non-finite features,
    #: a 4xx other than 408/429): the next tier may take it; never counts against health
    BAD_REQUEST = "bad_request"
    RATE_LIMITED = "rate_limited"
    TRUNCATED = "truncated"
    CONTEXT_LENGTH = "context_length"
    CIRCUIT_OPEN = "circuit_open"
    SLOW = "slow"
    DEADLINE = "deadline"
    LOW_CONFIDENCE = "low_confidence"
    INVALID_OUTPUT = "invalid_output"
    HALLUCINATION = "hallucination"
    UNSAFE = "unsafe"
    OVER_BUDGET = "over_budget"
    POLICY = "policy"


class FallbackType(StrEnum):
    """The five kinds of fallback of the specification, section 6."""

    RELIABILITY = "reliability"
    QUALITY = "quality"
    COST = "cost"
    LATENCY = "latency"
    POLICY = "policy"


_TYPE_OF_TRIGGER: dict[Trigger, FallbackType] = {
    Trigger.TIMEOUT: FallbackType.RELIABILITY,
    Trigger.ERROR: FallbackType.RELIABILITY,
    Trigger.BAD_REQUEST: FallbackType.RELIABILITY,
    Trigger.RATE_LIMITED: FallbackType.RELIABILITY,
    Trigger.TRUNCATED: FallbackType.RELIABILITY,
    Trigger.CONTEXT_LENGTH: FallbackType.RELIABILITY,
    Trigger.CIRCUIT_OPEN: FallbackType.RELIABILITY,
    Trigger.SLOW: FallbackType.LATENCY,
    Trigger.DEADLINE: FallbackType.LATENCY,
    Trigger.LOW_CONFIDENCE: FallbackType.QUALITY,
    Trigger.INVALID_OUTPUT: FallbackType.QUALITY,
    Trigger.HALLUCINATION: FallbackType.QUALITY,
    Trigger.UNSAFE: FallbackType.QUALITY,
    Trigger.OVER_BUDGET: FallbackType.COST,
    Trigger.POLICY: FallbackType.POLICY,
}


def fallback_type_of(trigger: Trigger) -> FallbackType:
    return _TYPE_OF_TRIGGER[trigger]


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MAX_REQUEST_ID_CHARS = 256
MAX_TENANT_CHARS = 128
MAX_REGION_CHARS = 64
MAX_TAGS = 64
MAX_TAG_CHARS = 128
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")


class Request(Event):
    """A caller's request, as produced to `<prefix>requests` (public contract).

    The bounds here hold wherever a request is read; the worker's own limits
    (size, depth, deadline, created_at window) are applied on top by
    `schemas.intake.read_request`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    request_id: str = Field(min_length=1, max_length=MAX_REQUEST_ID_CHARS)
    tenant: str = Field(default="default", min_length=1, max_length=MAX_TENANT_CHARS)
    input: dict[str, Any]
    params: dict[str, Any] = Field(default_factory=dict)
    deadline_ms: int | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    region: str | None = Field(default=None, min_length=1, max_length=MAX_REGION_CHARS)
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    created_at: datetime = Field(default_factory=utc_now)

    @field_validator("request_id", "tenant", "region")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL_CHARACTER.search(value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("tags")
    @classmethod
    def _bounded_tags(cls, tags: list[str]) -> list[str]:
        for tag in tags:
            if not 0 < len(tag) <= MAX_TAG_CHARS:
                raise ValueError(f"each tag must have 1 to {MAX_TAG_CHARS} characters")
            if _CONTROL_CHARACTER.search(tag):
                raise ValueError("must not contain control characters")
        return tags

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class AttemptSummary(Event):
    """One attempt (a model call or a skipped tier) as the caller sees it."""

    attempt: int
    tier: str
    model: str | None
    accepted: bool
    trigger: Trigger | None
    fallback_type: FallbackType | None
    reasons: list[str]
    called: bool
    latency_ms: float
    cost_usd: float


class RoutedRequest(Event):
    """A request on its way to one tier (`<prefix>tier.<name>`)."""

    schema_version: int = SCHEMA_VERSION
    request: Request
    tier: str
    attempt: int = Field(ge=1, description="number the next attempt will carry")
    tier_retry: int = Field(default=0, ge=0, description="retries already made on this tier")
    not_before: datetime | None = Field(
        default=None, description="backoff: do not call the model before this instant"
    )
    history: list[AttemptSummary] = Field(default_factory=list)
    spent_usd: float = 0.0
    received_at: datetime
    routed_at: datetime
    restricted: bool = Field(
        default=False, description="policy or safety confined this request to the restricted tier"
    )
    needs_context_window: int | None = Field(
        default=None, description="set after context_length_exceeded: smallest window to try"
    )
    reply_to: str | None = Field(
        default=None,
        description="the responses topic to answer on, when not the current one "
        "(a request read from a plain name while topics rotate)",
    )


class Attempt(Event):
    """A tier's answer or error with its metrics (`<prefix>attempts.<name>`)."""

    schema_version: int = SCHEMA_VERSION
    routed: RoutedRequest
    model: str
    output: Any = None
    error_trigger: Trigger | None = None
    error: str | None = None
    retryable: bool = False
    retry_after_ms: float | None = None
    #: time on the wire: from sending the request to the answer (0 when never sent)
    latency_ms: float
    #: time waiting before the request was sent: for the tier's stage, then inside the
    #: worker (a connection, a thread); counts against the deadline, never the tier's health
    queue_wait_ms: float
    called: bool = Field(
        default=True,
        description="false when the call never left the worker: it waited until "
        "too little of the deadline was left",
    )
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    confidence: float | None = None
    finish_reason: str | None = None
    started_at: datetime
    finished_at: datetime

    @property
    def failed(self) -> bool:
        return self.error_trigger is not None


class Verdict(Event):
    """The evaluation layer's decision on one attempt (`<prefix>verdicts`)."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    tenant: str
    attempt: int
    tier: str
    model: str | None
    called: bool
    accepted: bool
    trigger: Trigger | None
    fallback_type: FallbackType | None
    reasons: list[str]
    next_tier: str | None
    latency_ms: float
    queue_wait_ms: float
    tokens_in: int
    tokens_out: int
    cost_usd: float
    confidence: float | None
    safety_score: float | None
    region: str | None
    decided_at: datetime

    def summary(self) -> AttemptSummary:
        return AttemptSummary(
            attempt=self.attempt,
            tier=self.tier,
            model=self.model,
            accepted=self.accepted,
            trigger=self.trigger,
            fallback_type=self.fallback_type,
            reasons=self.reasons,
            called=self.called,
            latency_ms=self.latency_ms,
            cost_usd=self.cost_usd,
        )


ResponseStatus = Literal["served", "unavailable", "invalid"]


class Response(Event):
    """Exactly one final answer per request (`<prefix>responses`, public contract)."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    tenant: str
    status: ResponseStatus
    served_by: str | None = None
    model: str | None = None
    output: Any = None
    confidence: float | None = None
    message: str | None = None
    #: status `invalid`: what is wrong with the request (also in `message`)
    reason: str | None = None
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    deadline_ms: int | None = None
    within_deadline: bool | None = None
    attempts: list[AttemptSummary] = Field(default_factory=list)
    created_at: datetime | None = None
    completed_at: datetime = Field(default_factory=utc_now)


class Spend(Event):
    """Money a worker charged a tenant in one budget window since its last
    spend event, keyed by tenant (`<prefix>spend`): feeds the tenant budget
    table every worker reads."""

    schema_version: int = SCHEMA_VERSION
    spend_id: str = Field(description="unique per event: a redelivered copy is counted once")
    tenant: str
    usd: float
    attempts: int = Field(ge=1, description="charged attempts summed into usd")
    charged_at: datetime = Field(description="the latest charge summed (sets the window)")


class DeadLetter(Event):
    """An event no stage could process, with why (`<prefix>dlq`).

    The raw key and value are kept whole when the letter fits in one producer
    request; otherwise (`truncated`) only their first bytes are, and
    `value_bytes` and `value_sha256` still identify the whole value."""

    schema_version: int = SCHEMA_VERSION
    source_topic: str
    partition: int
    offset: int
    key_b64: str | None
    key_bytes: int | None = Field(default=None, description="size of the whole raw key")
    value_b64: str
    value_bytes: int = Field(ge=0, description="size of the whole raw value")
    value_sha256: str = Field(description="hex sha256 of the whole raw value")
    truncated: bool = Field(
        default=False, description="key_b64/value_b64 hold a prefix, or nothing (fallback)"
    )
    reason: str
    error_type: str
    stage: str
    request_id: str | None
    failed_at: datetime = Field(default_factory=utc_now)
