from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest

from schemas.codec import (
    decode_avro,
    encode_avro,
    encode_json,
)
from schemas.errors import EventDecodeError
from schemas.events import (
    Attempt,
    AttemptSummary,
    DeadLetter,
    Request,
    Response,
    RoutedRequest,
    Trigger,
    Verdict,
    fallback_type_of,
)

NOW = datetime(2026, 11, 25, 10, 0, 0, 123000, tzinfo=UTC)


def sample_request() -> Request:
    return Request(
        request_id="9f1c",
        tenant="acme",
        input={"messages": [{"role": "user", "content": "Summarise é ✓"}], "n": [1, 2.5, None]},
        params={"max_tokens": 256, "temperature": 0.2},
        deadline_ms=2000,
        max_cost_usd=0.05,
        region="eu",
        tags=["pii"],
        created_at=NOW,
    )


def sample_summary(attempt: int = 1) -> AttemptSummary:
    return AttemptSummary(
        attempt=attempt,
        tier="primary",
        model="m",
        accepted=False,
        trigger=Trigger.TIMEOUT,
        fallback_type=fallback_type_of(Trigger.TIMEOUT),
        reasons=["no answer within 1500 ms"],
        called=True,
        latency_ms=1500.0,
        cost_usd=0.0,
    )


def sample_routed() -> RoutedRequest:
    return RoutedRequest(
        request=sample_request(),
        tier="backup",
        attempt=2,
        tier_retry=1,
        not_before=NOW,
        history=[sample_summary()],
        spent_usd=0.001,
        received_at=NOW,
        routed_at=NOW,
        restricted=True,
        needs_context_window=9000,
    )


def sample_events() -> list[object]:
    routed = sample_routed()
    return [
        sample_request(),
        routed,
        Attempt(
            routed=routed,
            model="gpt",
            output={"content": "hi", "nested": {"a": [1, 2]}},
            latency_ms=12.5,
            queue_wait_ms=1.0,
            tokens_in=3,
            tokens_out=4,
            cost_usd=0.002,
            confidence=0.9,
            finish_reason="stop",
            started_at=NOW,
            finished_at=NOW,
        ),
        Attempt(
            routed=routed,
            model="gpt",
            error_trigger=Trigger.RATE_LIMITED,
            error="429",
            retryable=True,
            retry_after_ms=1000.0,
            latency_ms=1.0,
            queue_wait_ms=0.0,
            started_at=NOW,
            finished_at=NOW,
        ),
        Verdict(
            request_id="9f1c",
            tenant="acme",
            attempt=1,
            tier="primary",
            model=None,
            called=False,
            accepted=False,
            trigger=Trigger.CIRCUIT_OPEN,
            fallback_type=fallback_type_of(Trigger.CIRCUIT_OPEN),
            reasons=["open"],
            next_tier="backup",
            latency_ms=0.0,
            queue_wait_ms=0.0,
            tokens_in=0,
            tokens_out=0,
            cost_usd=0.0,
            confidence=None,
            safety_score=None,
            region="eu",
            decided_at=NOW,
        ),
        Response(
            request_id="9f1c",
            tenant="acme",
            status="served",
            served_by="backup",
            model="m",
            output={"label": 3},
            confidence=0.93,
            latency_ms=812.4,
            cost_usd=0.0021,
            deadline_ms=2000,
            within_deadline=True,
            attempts=[sample_summary(1), sample_summary(2)],
            created_at=NOW,
            completed_at=NOW,
        ),
        DeadLetter(
            source_topic="requests",
            partition=1,
            offset=7,
            key_b64=None,
            key_bytes=None,
            value_b64=base64.b64encode(b"\xff").decode(),
            value_bytes=1,
            value_sha256=hashlib.sha256(b"\xff").hexdigest(),
            truncated=True,
            reason="bad",
            error_type="EventDecodeError",
            stage="router",
            request_id=None,
            failed_at=NOW,
        ),
    ]


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).__name__)
def test_avro_round_trip_keeps_every_field(event: object) -> None:
    model = type(event)
    assert decode_avro(model, encode_avro(event)) == event  # type: ignore[arg-type]


def test_json_round_trip_of_public_events() -> None:
    response = sample_events()[5]
    assert isinstance(response, Response)
    body = json.loads(encode_json(response))
    # A plain object of exactly the model's fields: no framework metadata, nulls kept.
    assert list(body) == list(Response.model_fields)
    assert body["message"] is None
    assert body["status"] == "served" and body["attempts"][0]["trigger"] == "timeout"
    assert Response.model_validate(body) == response


def test_json_fields_keep_non_ascii_text_as_is_in_avro() -> None:
    # Escaped, 1 MB of "é" became 3 MB on the internal topics.
    request = sample_request().model_copy(update={"input": {"p": "é" * 10_000}})
    assert len(encode_avro(request)) < 20_000 + 500
    odd = sample_request().model_copy(update={"input": {"p": "a\ud800b"}})
    assert decode_avro(Request, encode_avro(odd)) == odd  # a lone surrogate still encodes


def test_truncated_avro_is_a_decode_error() -> None:
    payload = encode_avro(sample_routed())
    with pytest.raises(EventDecodeError):
        decode_avro(RoutedRequest, payload[: len(payload) // 2])
