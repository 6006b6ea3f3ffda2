"""The gateway end to end, through the official `openai` SDK: served, fallback,
unavailable, streaming, bad key, limits, deadline, 200 concurrent calls over
two replicas, and (last: it stops the worker) no key in any log, topic or
ClickHouse row."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from tests.fakes.openai_server import FakeOpenAIServer, OpenAIFault
from tests.gateway.conftest import (
    ACME_KEY,
    ALL_KEYS,
    BACKUP_REPLY,
    BAD_KEY,
    GLOBEX_KEY,
    ONE_AT_A_TIME_KEY,
    PRIMARY_REPLY,
    SLOW_LANE_KEY,
    GatewayStack,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(autouse=True)
def fresh_upstreams(fake_upstreams: tuple[FakeOpenAIServer, FakeOpenAIServer]) -> None:
    for server in fake_upstreams:
        server.reset()


async def test_served_completion(gateway_stack: GatewayStack) -> None:
    async with gateway_stack.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="fallback", messages=QUESTION, max_tokens=64, temperature=0.2
        )
    completion = raw.parse()
    request_id = raw.headers["x-fallback-request-id"]
    response = await asyncio.wait_for(gateway_stack.harness.expect(request_id), 10)
    assert completion.choices[0].message.content == PRIMARY_REPLY, response.attempts
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "fake-primary"
    assert raw.headers["x-fallback-served-by"] == "primary"
    assert raw.headers["x-fallback-attempts"] == "1"
    assert request_id.startswith("gw0-") and completion.id == f"chatcmpl-{request_id}"
    # The mapping: messages and the sampling fields reached the model.
    upstream = gateway_stack.primary.requests[-1].body
    assert ACME_KEY not in json.dumps(gateway_stack.primary.requests[-1].headers)
    assert upstream["messages"] == QUESTION
    assert upstream["max_tokens"] == 64 and upstream["temperature"] == 0.2
    # The tenant is the key's, and the pipeline's response is the one we got.
    assert raw.headers["x-fallback-latency-ms"] == f"{response.latency_ms:.1f}"
    timing = raw.headers["Server-Timing"]
    assert timing.startswith(f"pipeline;dur={response.latency_ms:.1f}, responses-hop;dur=")
    assert response.tenant == "acme" and response.served_by == "primary"


async def test_fallback_when_the_primary_fails(gateway_stack: GatewayStack) -> None:
    gateway_stack.primary.set_fault(OpenAIFault.SERVER_ERROR)
    async with gateway_stack.client(replica=1, key=GLOBEX_KEY) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="fallback", messages=QUESTION
        )
    completion = raw.parse()
    assert completion.choices[0].message.content == BACKUP_REPLY
    assert completion.model == "fake-backup"
    assert raw.headers["x-fallback-served-by"] == "backup"
    assert raw.headers["x-fallback-attempts"] == "2"
    assert raw.headers["x-fallback-request-id"].startswith("gw1-")
    assert gateway_stack.primary.request_count == 1


async def test_unavailable_is_503_with_the_reasons(gateway_stack: GatewayStack) -> None:
    gateway_stack.primary.set_fault(OpenAIFault.SERVER_ERROR)
    gateway_stack.backup.set_fault(OpenAIFault.SERVER_ERROR)
    # The SDK would retry a 503 twice by default: x-should-retry: false stops it.
    async with gateway_stack.client(max_retries=2) as client:
        with pytest.raises(openai.InternalServerError) as raised:
            await client.chat.completions.create(model="fallback", messages=QUESTION)
    error = raised.value
    assert error.status_code == 503
    assert isinstance(error.body, dict)
    assert error.body["message"] == "Unable to generate reliable response."
    assert error.body["code"] == "unavailable"
    assert [(a["tier"], a["trigger"]) for a in error.body["attempts"]] == [
        ("primary", "error"),
        ("backup", "error"),
    ]
    assert all(a["reasons"] for a in error.body["attempts"])
    assert error.response.headers["x-should-retry"] == "false"
    assert gateway_stack.primary.request_count == 1, "the SDK retried"


async def test_streaming_through_the_sdk_iterator(gateway_stack: GatewayStack) -> None:
    async with gateway_stack.client() as client:
        stream = await client.chat.completions.create(
            model="fallback",
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == PRIMARY_REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []  # the usage chunk the caller asked for
    assert all(c.model == "fake-primary" for c in chunks)


async def test_streaming_an_unavailable_answer_keeps_its_status(
    gateway_stack: GatewayStack,
) -> None:
    gateway_stack.primary.set_fault(OpenAIFault.SERVER_ERROR)
    gateway_stack.backup.set_fault(OpenAIFault.SERVER_ERROR)
    async with gateway_stack.client() as client:
        with pytest.raises(openai.InternalServerError) as raised:
            await client.chat.completions.create(model="fallback", messages=QUESTION, stream=True)
    assert raised.value.status_code == 503


async def test_a_long_stream_gets_keep_alives_then_the_answer(
    gateway_stack: GatewayStack,
) -> None:
    """Replica 1 starts waiting streams after 300 ms (gateway.stream_keepalive_ms)."""
    async with gateway_stack.client(replica=1) as client:
        stream = await client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "sleep:1000 hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "echo: sleep:1000 hi"
    async with httpx.AsyncClient(timeout=10) as http:
        raw = await http.post(
            gateway_stack.gateways[1].base_url + "/chat/completions",
            headers={"Authorization": f"Bearer {GLOBEX_KEY}"},
            json={
                "model": "echo",
                "stream": True,
                "messages": [{"role": "user", "content": "sleep:1000 x"}],
            },
        )
    assert raw.status_code == 200
    assert raw.text.startswith(": keep-alive\n\n") and raw.text.endswith("data: [DONE]\n\n")


async def test_a_started_stream_that_fails_ends_with_an_error_event(
    gateway_stack: GatewayStack,
) -> None:
    async with gateway_stack.client(replica=1) as client:
        stream = await client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "sleep:3000 too slow"}],
            stream=True,
            extra_headers={"X-Request-Timeout-Ms": "1000"},
        )
        with pytest.raises(openai.APIError) as raised:
            _ = [chunk async for chunk in stream]
    assert "deadline" in raised.value.message
    assert isinstance(raised.value.body, dict) and raised.value.body["code"] == "deadline_exceeded"


async def test_bad_key_is_401_and_no_key_is_401(gateway_stack: GatewayStack) -> None:
    async with gateway_stack.client(key=BAD_KEY) as client:
        with pytest.raises(openai.AuthenticationError) as raised:
            await client.chat.completions.create(model="fallback", messages=QUESTION)
    assert raised.value.status_code == 401
    assert BAD_KEY not in json.dumps(raised.value.body)
    async with httpx.AsyncClient() as http:
        missing = await http.post(
            gateway_stack.gateways[0].base_url + "/chat/completions",
            json={"model": "fallback", "messages": QUESTION},
        )
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert gateway_stack.primary.request_count == 0


async def test_models_and_unknown_model(gateway_stack: GatewayStack) -> None:
    async with gateway_stack.client() as client:
        models = await client.models.list()
        assert [m.id for m in models.data] == ["fallback", "echo"]
        with pytest.raises(openai.NotFoundError) as raised:
            await client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert raised.value.status_code == 404
    assert raised.value.body["code"] == "model_not_found"  # type: ignore[index]


async def test_unsupported_field_is_400_naming_it(gateway_stack: GatewayStack) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    async with gateway_stack.client() as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(model="fallback", messages=QUESTION, tools=tools)
    assert raised.value.body["param"] == "tools"  # type: ignore[index]
    assert gateway_stack.primary.request_count == 0


async def test_a_body_above_max_request_bytes_is_413(gateway_stack: GatewayStack) -> None:
    limit = gateway_stack.harness.config.worker.max_request_bytes
    huge = [{"role": "user", "content": "x" * limit}]
    async with gateway_stack.client() as client:
        with pytest.raises(openai.APIStatusError) as raised:
            await client.chat.completions.create(model="fallback", messages=huge)
    assert raised.value.status_code == 413
    assert isinstance(raised.value.body, dict) and "message" in raised.value.body


async def test_a_caller_that_hangs_up_stops_waiting(gateway_stack: GatewayStack) -> None:
    gateway = gateway_stack.gateways[1]
    late_before = gateway.health()["late_responses"]
    async with httpx.AsyncClient(timeout=0.5) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(
                gateway.base_url + "/chat/completions",
                headers={"Authorization": f"Bearer {GLOBEX_KEY}"},
                json={"model": "echo", "messages": [{"role": "user", "content": "sleep:1500 x"}]},
            )
    await asyncio.sleep(0.3)
    assert gateway.health()["waiting"] == 0  # the call left when the client did
    for _ in range(50):
        if gateway.health()["late_responses"] > late_before:
            break
        await asyncio.sleep(0.1)
    assert gateway.health()["late_responses"] == late_before + 1


async def test_named_chain_tags_and_metadata(gateway_stack: GatewayStack) -> None:
    async with gateway_stack.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="echo",
            messages=[{"role": "user", "content": "hello"}],
            metadata={"tags": "pii, beta", "team": "search"},
            user="u-42",
        )
    assert raw.parse().choices[0].message.content == "echo: hello"
    assert raw.headers["x-fallback-served-by"] == "echo"
    request_id = raw.headers["x-fallback-request-id"]
    records = await gateway_stack.harness.read_topic(
        gateway_stack.harness.client.topics.requests, until=10**6, timeout_s=2
    )
    sent = [json.loads(r.value) for r in records if r.key == request_id.encode()]
    assert len(sent) == 1
    assert sent[0]["tags"] == ["chain-echo", "pii", "beta", "team:search", "user:u-42"]
    assert sent[0]["tenant"] == "acme" and sent[0]["deadline_ms"] == 20_000


async def test_requests_per_minute_limit_is_429_with_retry_after(
    gateway_stack: GatewayStack,
) -> None:
    async with gateway_stack.client(key=SLOW_LANE_KEY) as client:
        for _ in range(2):
            await client.chat.completions.create(model="echo", messages=QUESTION)
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(model="echo", messages=QUESTION)
    assert raised.value.status_code == 429
    assert int(raised.value.response.headers["Retry-After"]) >= 1


async def test_in_flight_limit_is_429(gateway_stack: GatewayStack) -> None:
    async with gateway_stack.client(key=ONE_AT_A_TIME_KEY) as client:
        slow = asyncio.create_task(
            client.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "sleep:1500 wait"}]
            )
        )
        for _ in range(100):  # until the slow call holds the key's one slot
            if gateway_stack.gateways[0].health()["waiting"]:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(model="echo", messages=QUESTION)
        assert raised.value.response.headers["Retry-After"] == "1"
        assert (await slow).choices[0].message.content == "echo: sleep:1500 wait"
        # The slot is free again.
        await client.chat.completions.create(model="echo", messages=QUESTION)


async def test_deadline_is_504_and_the_late_response_is_counted(
    gateway_stack: GatewayStack,
) -> None:
    gateway = gateway_stack.gateways[0]
    late_before = gateway.health()["late_responses"]
    started = time.monotonic()
    async with gateway_stack.client(max_retries=2) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            await client.chat.completions.create(
                model="echo",
                messages=[{"role": "user", "content": "sleep:3000 too slow"}],
                extra_headers={"X-Request-Timeout-Ms": "1000"},
            )
    elapsed = time.monotonic() - started
    assert raised.value.status_code == 504
    assert raised.value.body["code"] == "deadline_exceeded"  # type: ignore[index]
    assert 0.9 < elapsed < 10, "one call (no SDK retry), ended at its deadline"
    # The pipeline answers (unavailable) soon after; the gateway drops and counts it.
    for _ in range(100):
        if gateway.health()["late_responses"] > late_before:
            break
        await asyncio.sleep(0.1)
    assert gateway.health()["late_responses"] == late_before + 1


async def test_200_concurrent_calls_through_two_replicas(gateway_stack: GatewayStack) -> None:
    before = [g.health() for g in gateway_stack.gateways]
    clients = [gateway_stack.client(0), gateway_stack.client(1)]

    async def call(i: int) -> tuple[int, str, str]:
        raw = await clients[i % 2].chat.completions.with_raw_response.create(
            model="echo", messages=[{"role": "user", "content": f"call {i}"}]
        )
        return i, raw.parse().choices[0].message.content or "", raw.headers["x-fallback-request-id"]

    try:
        results = await asyncio.wait_for(asyncio.gather(*(call(i) for i in range(200))), 120)
    finally:
        for client in clients:
            await client.close()
    assert all(content == f"echo: call {i}" for i, content, _ in results)
    assert len({request_id for _, _, request_id in results}) == 200
    assert all(rid.startswith(f"gw{i % 2}-") for i, _, rid in results)
    after = [g.health() for g in gateway_stack.gateways]
    # Each replica read its own partitions only: it saw none of the other's responses.
    assert [set(h["reads_partitions"]) for h in after] == [{0}, {1}]
    for old, new in zip(before, after, strict=True):
        assert new["delivered"] - old["delivered"] == 100
        assert new["unknown_responses"] == old["unknown_responses"] == 0
        assert new["waiting"] == 0


async def test_no_key_in_any_log_topic_or_row(gateway_stack: GatewayStack) -> None:
    """Last: it stops the worker to read chDB.  Every key was presented above
    (the bad one too); none may appear anywhere the gateway or pipeline writes."""
    # Every key presented at least once more here, so this test stands alone too.
    for replica, key in enumerate(ALL_KEYS):
        async with gateway_stack.client(replica % 2, key=key) as client:
            try:
                await client.chat.completions.create(model="echo", messages=QUESTION)
            except (openai.AuthenticationError, openai.RateLimitError) as refused:
                assert refused.status_code == 429 or key == BAD_KEY
    harness = gateway_stack.harness
    topics = harness.client.topics
    names = [topics.requests, topics.responses, topics.verdicts, topics.dlq]
    for tier in ("primary", "backup", "echo"):
        names += [topics.tier(tier), topics.attempts(tier)]
    values: list[bytes] = []
    for name in names:
        values += [r.value for r in await harness.read_topic(name, until=10**6, timeout_s=1)]
    assert values
    texts = [gateway.log_path.read_text(errors="replace") for gateway in gateway_stack.gateways]
    assert all("DEBUG" in text for text in texts), "the gateways did log at debug level"
    texts += [harness.worker.log_path.read_text(errors="replace")]
    texts += [g.config_path.read_text() for g in gateway_stack.gateways]
    rows = harness.stored_rows_as_text()
    assert rows
    for key in ALL_KEYS:
        for needle in (key, key[-16:]):
            assert not any(needle.encode() in value for value in values), "key in a topic"
            assert not any(needle in text for text in texts), "key in a log or config file"
            assert not any(needle in row for row in rows), "key in ClickHouse"
