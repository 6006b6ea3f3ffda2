"""Reading a caller's request: every field bounded, every refusal named, the id kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from schemas.codec import encode_avro
from schemas.errors import EventDecodeError, EventTooLarge
from schemas.events import Request
from schemas.intake import RequestLimits, read_request, request_id_in_prefix
from tests.schemas.test_codec import sample_request

NOW = datetime.now(UTC)
LIMITS = RequestLimits(max_bytes=100_000)


def read(payload: bytes, limits: RequestLimits = LIMITS) -> Request:
    return read_request(payload, limits, NOW)


def refusal(payload: bytes, limits: RequestLimits = LIMITS) -> EventDecodeError:
    with pytest.raises(EventDecodeError) as caught:
        read(payload, limits)
    return caught.value


def test_request_json_minimal_gets_defaults() -> None:
    # created_at defaults to the time of reading: the clock must be read now, not
    # at import (the suite may reach this test minutes later).
    minimal = b'{"request_id": "r1", "input": {"prompt": "hi"}}'
    request = read_request(minimal, LIMITS, datetime.now(UTC))
    assert request.tenant == "default" and request.tags == [] and request.created_at.tzinfo


def test_request_avro_is_accepted_too() -> None:
    request = sample_request().model_copy(update={"created_at": NOW})
    assert read(encode_avro(request)) == request


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("payload", "reason", "request_id"),
    [
        (b"{not json", "not valid JSON", None),
        (b"\xff\xfe", "not valid", None),
        (b"[1, 2]", "must be a JSON object", None),
        (b'{"input": {}}', "request_id: Field required", None),
        (b'{"request_id": "r9", "input": "text"}', "input: Input should be a valid dict", "r9"),
        (b'{"request_id": "r8", "input": {}, "deadline_ms": -1}', "deadline_ms", "r8"),
        (b'{"request_id": "r7", "input": {}, "surprise": 1}', "surprise: Extra inputs", "r7"),
        # Issue 10 item 2: each of these once reached a stage and got no response.
        (
            b'{"request_id": "d1", "input": {}, "deadline_ms": 1000000000000000}',
            "deadline_ms: above worker.max_deadline_ms=86400000",
            "d1",
        ),
        (
            b'{"request_id": "d2", "input": {}, "deadline_ms": 9223372036854775808}',
            "deadline_ms: above",
            "d2",
        ),
        (
            b'{"request_id": "c1", "input": {}, "created_at": "9999-12-31T23:59:59Z"}',
            "created_at: more than worker.created_at_max_ahead_s=300 after now",
            "c1",
        ),
        (
            b'{"request_id": "c2", "input": {}, "created_at": "9999-12-31T23:59:59-14:00"}',
            "after now",
            "c2",
        ),
        (
            b'{"request_id": "c3", "input": {}, "created_at": "0001-01-01T00:00:00+14:00"}',
            "created_at: more than worker.created_at_max_age_s=604800 before now",
            "c3",
        ),
        (
            ('{"request_id": "n1", "input": {"x": ' + nested(10_000) + "}}").encode(),
            "nested deeper than worker.max_request_depth=64",
            "n1",
        ),
        (
            ('{"request_id": "n2", "input": {"x": ' + nested(70) + "}}").encode(),
            "input.x.0.0",
            "n2",
        ),
        (
            b'{"request_id": "u1", "input": {"prompt": "caf\xe9"}}',
            "not valid UTF-8: invalid byte at offset 45",
            "u1",
        ),
        (b'{"request_id": "u\xff", "input": {}}', "not valid UTF-8", None),
        (
            b'{"request_id": "s1", "input": {"prompt": "\\ud800"}}',
            "input.prompt: not valid Unicode",
            "s1",
        ),
        (b'{"request_id": "\\udfff", "input": {}}', "request_id", None),
        (
            b'{"request_id": "f1", "input": {"features": [1, NaN]}}',
            "input.features.1: NaN and infinite numbers are not allowed",
            "f1",
        ),
        (b'{"request_id": "f2", "input": {"v": 1e999}}', "input.v: NaN", "f2"),
        (b'{"request_id": "f3", "input": {}, "max_cost_usd": Infinity}', "max_cost_usd", "f3"),
        (
            b'{"request_id": "i1", "input": {"v": ' + b"9" * 5000 + b"}}",
            "not valid JSON",
            "i1",
        ),
        (b'{"request_id": "t\\n1", "input": {}}', "request_id: Value error, must not", "t\n1"),
        (b'{"request_id": "t2", "tenant": "a\\u0000", "input": {}}', "tenant: Value", "t2"),
        (b'{"request_id": "t3", "input": {}, "tags": [""]}', "each tag must have", "t3"),
        (b'{"request_id": "t4", "input": {}, "region": ""}', "region", "t4"),
        (
            json.dumps({"request_id": "t5", "input": {}, "tags": ["a"] * 70}).encode(),
            "tags: List should have at most 64 items",
            "t5",
        ),
    ],
)
def test_bad_requests_name_the_problem(payload: bytes, reason: str, request_id: str | None) -> None:
    refused = refusal(payload)
    assert reason in refused.reason
    assert refused.request_id == request_id
    assert not refused.reason.lower().startswith("invalid request")  # the message says it once
    assert len(refused.reason) <= 1000 and "\n" not in refused.reason


def test_a_reason_is_short_and_one_line_whatever_the_input() -> None:
    keys = {f"bad\nkey{'x' * 5000}{i}": 1 for i in range(20)}
    payload = json.dumps({"request_id": "k1", "input": {}, **keys}).encode()
    refused = refusal(payload, RequestLimits(max_bytes=1_000_000))
    assert refused.request_id == "k1" and "and 15 more" in refused.reason
    assert "\n" not in refused.reason and len(refused.reason) <= 1000


def test_limits_hold_for_avro_requests_too() -> None:
    deep: dict[str, object] = {"x": []}
    inner = deep["x"]
    for _ in range(80):
        assert isinstance(inner, list)
        inner.append([])
        inner = inner[0]
    request = Request(request_id="a1", input=deep, deadline_ms=10**15, created_at=NOW)
    refused = refusal(encode_avro(request))
    assert refused.request_id == "a1"
    assert "input.x" in refused.reason and "max_request_depth=64" in refused.reason
    assert "deadline_ms: above" in refused.reason


def test_a_created_at_inside_the_window_is_kept() -> None:
    for offset in (timedelta(days=-6), timedelta(minutes=4)):
        at = (NOW + offset).isoformat()
        body = json.dumps({"request_id": "w", "input": {}, "created_at": at}).encode()
        assert read(body).created_at == NOW + offset


def test_oversized_request_is_refused_with_its_id() -> None:
    payload = json.dumps({"request_id": "big", "input": {"prompt": "x" * 200_000}}).encode()
    with pytest.raises(EventTooLarge) as caught:
        read(payload)
    assert caught.value.request_id == "big"
    assert "max_request_bytes=100000" in caught.value.reason


def test_oversized_avro_request_is_refused_too_with_its_id() -> None:
    payload = encode_avro(sample_request().model_copy(update={"input": {"pad": "x" * 5000}}))
    with pytest.raises(EventTooLarge) as caught:
        read(payload, RequestLimits(max_bytes=300))
    assert caught.value.request_id == "9f1c"


@pytest.mark.parametrize(
    ("head", "request_id"),
    [
        (b'{"request_id": "r1", "input": {"pad": "xxxx', "r1"),
        (b'  {"input": {"a": [1, {"b": 2}]}, "tenant": "t", "request_id": "r2", "pad": "', "r2"),
        (b'{"input": {"request_id": "nested"}, "pad": "xx', None),
        (b'{"pad": "xxxxxxxx', None),
        (b'{"request_id": 7, "input": {}}', None),
        (b'{"request_id": "' + b"x" * 300 + b'"}', None),
        (b'{"input": ' + b"[" * 5000, None),
        (b"[1, 2]", None),
        (b"", None),
    ],
)
def test_request_id_is_read_from_the_top_level_of_a_prefix(
    head: bytes, request_id: str | None
) -> None:
    assert request_id_in_prefix(head) == request_id


def test_request_id_is_read_from_a_broken_request() -> None:
    refused = refusal(b'{"request_id": "r5", "input": {"a": }}')
    assert refused.request_id == "r5" and "not valid JSON" in refused.reason
