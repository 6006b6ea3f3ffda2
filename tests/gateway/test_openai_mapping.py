"""OpenAI body -> pipeline Request, and pipeline Response -> OpenAI answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.events import AttemptSummary, FallbackType, Response, Trigger
from streams.adapters.openai_chat import SAMPLING_PARAM_KEYS
from streams.config.models import GatewayConfig
from streams.gateway.errors import ApiError
from streams.gateway.keys import Caller
from streams.gateway.openai_request import (
    ChatCompletionBody,
    deadline_ms,
    parse_body,
    pipeline_request,
)
from streams.gateway.openai_response import completion, completion_chunks, outcome_error

GATEWAY = GatewayConfig.model_validate(
    {
        "keys": [{"name": "k", "tenant": "acme", "key_sha256": "0" * 64}],
        "chains": {"cheap": {"tags": ["chain-cheap"]}},
        "default_timeout_ms": 5000,
        "max_timeout_ms": 9000,
    }
)
CALLER = Caller("k", "acme", None, None)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "fallback", "messages": MESSAGES, **fields}


def request_for(raw: dict[str, Any]) -> Any:
    return pipeline_request(
        parse_body(raw),
        caller=CALLER,
        request_id="gw0-1",
        deadline_ms=1234,
        gateway=GATEWAY,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def failure(raw: Any) -> ApiError:
    with pytest.raises(ApiError) as raised:
        request_for(raw)
    return raised.value


def test_messages_params_deadline_and_tenant() -> None:
    request = request_for(
        body(
            temperature=0.2,
            top_p=0.9,
            max_completion_tokens=64,
            stop=["\n"],
            seed=7,
            response_format={"type": "json_object"},
            stream=True,
            n=1,
            logprobs=False,
        )
    )
    assert request.input == {"messages": MESSAGES}
    assert request.params == {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["\n"],
        "seed": 7,
        "response_format": {"type": "json_object"},
    }
    assert (request.request_id, request.tenant, request.deadline_ms) == ("gw0-1", "acme", 1234)


def test_every_sampling_field_the_adapter_forwards_is_accepted() -> None:
    assert set(ChatCompletionBody.model_fields) >= SAMPLING_PARAM_KEYS


def test_the_tenant_cannot_come_from_the_body() -> None:
    assert failure(body(tenant="globex")).param == "tenant"


@pytest.mark.parametrize(
    ("raw", "status", "param", "code"),
    [
        (body(tools=[{"type": "function"}]), 400, "tools", "unsupported_parameter"),
        (body(n=2), 400, "n", "invalid_value"),
        (body(logprobs=True), 400, "logprobs", "invalid_value"),
        (body(temperature=3), 400, "temperature", "invalid_value"),
        (body(messages=[]), 400, "messages", "invalid_value"),
        (body(messages=[{"content": "no role"}]), 400, "messages", "invalid_value"),
        ({"messages": MESSAGES}, 400, "model", "missing"),
        (body(max_tokens=5, max_completion_tokens=5), 400, "max_completion_tokens", None),
        (body(model="gpt-4o"), 404, "model", "model_not_found"),
        ([1, 2], 400, None, "invalid_request"),
    ],
)
def test_refusals_name_the_field(raw: Any, status: int, param: str, code: str | None) -> None:
    error = failure(raw)
    assert (error.status, error.param) == (status, param)
    if code:
        assert error.code == code
    assert set(error.body()["error"]) >= {"message", "type", "param", "code"}


def test_fields_sent_as_null_are_ignored() -> None:
    request = request_for(body(tools=None, temperature=None, user=None))
    assert request.params == {}


def test_chain_metadata_and_user_become_tags() -> None:
    request = request_for(
        body(model="cheap", metadata={"tags": "pii, eu ,", "team": "search"}, user="u-1")
    )
    assert request.tags == ["chain-cheap", "pii", "eu", "team:search", "user:u-1"]
    assert failure(body(metadata={str(i): "v" for i in range(17)})).param == "metadata"


@pytest.mark.parametrize(
    ("header", "expected"), [(None, 5000), ("250", 250), ("9000", 9000), ("60000", 9000)]
)
def test_deadline_from_the_header_capped(header: str | None, expected: int) -> None:
    assert deadline_ms(header, GATEWAY) == expected


@pytest.mark.parametrize("header", ["0", "-5", "soon", "1.5"])
def test_a_bad_deadline_header_is_400(header: str) -> None:
    with pytest.raises(ApiError) as raised:
        deadline_ms(header, GATEWAY)
    assert raised.value.status == 400 and raised.value.param == "X-Request-Timeout-Ms"


def summary(
    tier: str, accepted: bool, trigger: Trigger | None, reasons: list[str]
) -> AttemptSummary:
    return AttemptSummary(
        attempt=1,
        tier=tier,
        model=f"m-{tier}",
        accepted=accepted,
        trigger=trigger,
        fallback_type=FallbackType.RELIABILITY if trigger else None,
        reasons=reasons,
        called=True,
        latency_ms=1.0,
        cost_usd=0.0,
    )


def served(output: Any) -> Response:
    return Response(
        request_id="gw0-9",
        tenant="acme",
        status="served",
        served_by="backup",
        model="gpt-4o-mini",
        output=output,
        latency_ms=12.5,
        cost_usd=0.002,
        attempts=[
            summary("primary", False, Trigger.TIMEOUT, ["no answer within 1500 ms"]),
            summary("backup", True, None, []),
        ],
        completed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_a_served_response_is_a_chat_completion() -> None:
    answer = completion(served({"content": "Paris.", "role": "assistant"}))
    assert answer["id"] == "chatcmpl-gw0-9" and answer["object"] == "chat.completion"
    assert answer["model"] == "gpt-4o-mini"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Paris."}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] is None  # the Response carries no token counts
    assert answer["created"] == 1767225600


@pytest.mark.parametrize(
    ("output", "content"),
    [({"label": 7}, '{"label":7}'), ("plain text", "plain text"), ([1, 2], "[1,2]")],
)
def test_other_outputs_become_text(output: Any, content: str) -> None:
    assert completion(served(output))["choices"][0]["message"]["content"] == content


def test_tool_calls_and_usage_are_passed_on() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    usage = {"prompt_tokens": 3, "completion_tokens": 4}
    answer = completion(served({"content": None, "tool_calls": [call], "usage": usage}))
    assert answer["choices"][0]["message"]["tool_calls"] == [call]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_chunks_carry_the_whole_answer_then_the_finish() -> None:
    chunks = completion_chunks(served({"content": "Paris.", "role": "assistant"}), True)
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 3
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Paris."}
    assert chunks[1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[2]["choices"] == [] and "usage" in chunks[2]
    assert len(completion_chunks(served({"content": "x"}), False)) == 2


def test_unavailable_is_503_with_every_tiers_reasons() -> None:
    response = Response(
        request_id="gw0-3",
        tenant="acme",
        status="unavailable",
        message="Unable to generate reliable response.",
        attempts=[
            summary("primary", False, Trigger.TIMEOUT, ["no answer within 1500 ms"]),
            summary("backup", False, Trigger.LOW_CONFIDENCE, ["confidence 0.4 < 0.8"]),
        ],
    )
    error = outcome_error(response)
    assert error.status == 503
    body = error.body()["error"]
    assert body["message"] == "Unable to generate reliable response."
    assert (body["type"], body["code"]) == ("server_error", "unavailable")
    assert body["attempts"] == [
        {"tier": "primary", "trigger": "timeout", "reasons": ["no answer within 1500 ms"]},
        {"tier": "backup", "trigger": "low_confidence", "reasons": ["confidence 0.4 < 0.8"]},
    ]
    assert error.headers["x-should-retry"] == "false"
    assert error.headers["x-fallback-attempts"] == "2"
    assert "x-fallback-served-by" not in error.headers


def test_invalid_is_400_with_the_pipelines_reason() -> None:
    response = Response(
        request_id="gw0-4",
        tenant="unknown",
        status="invalid",
        message="Invalid request: request is 2000000 bytes",
    )
    error = outcome_error(response)
    assert (error.status, error.code) == (400, "invalid_request")
    assert error.message == "Invalid request: request is 2000000 bytes"
