"""OpenAIChatAdapter against a real local server speaking the chat-completions protocol."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from email.utils import formatdate
from typing import Any

import pytest

from schemas.events import Trigger
from streams.adapters.base import Generation, ModelCall
from streams.adapters.errors import (
    ContentPolicyViolation,
    ContextLengthExceeded,
    MalformedResponse,
    ModelAccessRefused,
    ModelError,
    ModelRequestRejected,
    ModelTimeout,
    ModelUnavailable,
    RateLimited,
    StreamTruncated,
)
from streams.adapters.openai_chat import OpenAIChatAdapter
from streams.config import OpenAIChatConfig, PriceConfig, TierConfig
from tests.fakes import FakeOpenAIServer, OpenAIFault

SECRET_KEY = "sk-test-0123456789abcdefSECRETkey9876543210"
KEY_ENV = "TEST_OPENAI_API_KEY"
REPLY = "The capital of France is Paris."
PRICE = PriceConfig(per_call_usd=0.001, per_1k_input_tokens_usd=0.5, per_1k_output_tokens_usd=1.5)
# Limits small enough to keep the suite fast, far enough apart to tell which one fired.
# The machine is shared (2 cores, other suites running): leave room for scheduling delays.
FIRST_TOKEN_MS = 300.0
STALL_MS = 300.0
TOTAL_S = 1.5
SLOW_S = 3.0  # how long the fake sleeps in slow/stall/silent faults (cut short on hang-up)

AdapterFactory = Callable[..., OpenAIChatAdapter]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=REPLY) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_server(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.reset()
    server.reply = REPLY
    server.send_usage = True
    server.tool_call = None
    server.token_logprobs = [-0.05, -0.2, -0.01, -0.5, -0.1]
    server.supports_prefill = True
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)


@pytest.fixture
async def make_adapter(server: FakeOpenAIServer) -> AsyncIterator[AdapterFactory]:
    adapters: list[OpenAIChatAdapter] = []

    def build(*, tier: dict[str, Any] | None = None, **adapter: Any) -> OpenAIChatAdapter:
        settings: dict[str, Any] = {
            "kind": "openai_chat",
            "base_url": server.base_url,
            "model": "fake-gpt",
            "api_key_env": KEY_ENV,
            "first_token_timeout_ms": FIRST_TOKEN_MS,
            "stall_timeout_ms": STALL_MS,
            **adapter,
        }
        config = OpenAIChatConfig(**settings)
        tier_config = TierConfig(
            name="primary",
            adapter=config,
            price=PRICE,
            default_confidence=0.7,
            **(tier or {}),
        )
        built = OpenAIChatAdapter(config, tier_config)
        adapters.append(built)
        return built

    yield build
    for adapter in adapters:
        await adapter.aclose()


def call(
    prompt: str = "What is the capital of France?",
    *,
    params: dict[str, Any] | None = None,
    timeout_s: float = TOTAL_S,
    **input_fields: Any,
) -> ModelCall:
    return ModelCall(
        request_id="req-1",
        input=input_fields or {"prompt": prompt},
        params=params or {},
        timeout_s=timeout_s,
    )


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        assert SECRET_KEY not in str(text)
        assert SECRET_KEY[:12] not in str(text)


def error_texts(error: BaseException) -> list[str]:
    """Everything a log line or an event could carry about an error, causes included."""
    texts = [str(error), repr(error), str(error.args)]
    for linked in (error.__cause__, error.__context__):
        if linked is not None:
            texts += [str(linked), repr(linked)]
    return texts


# ------------------------------------------------------------- answers ----


async def test_streamed_answer_is_whole_with_usage_tokens_and_cost(
    server: FakeOpenAIServer, make_adapter: AdapterFactory
) -> None:
    adapter = make_adapter()
    generation = await adapter.generate(call())

    assert generation.output == {"content": REPLY, "role": "assistant"}
    assert generation.finish_reason == "stop"
    assert generation.model == "fake-gpt"
    usage = server.usage_for(server.requests[0].body)
    assert (generation.tokens_in, generation.tokens_out) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert generation.extra["tokens_source"] == "usage"
    cost = PRICE.cost(generation.tokens_in, generation.tokens_out)
    assert cost == pytest.approx(0.001 + usage["prompt_tokens"] * 0.0005 + 6 * 0.0015)
    assert generation.confidence == 0.7  # no logprobs asked: the tier default
    assert server.request_count == 1


async def test_request_body_merges_params_and_keeps_only_sampling_keys(
    server: FakeOpenAIServer, make_adapter: AdapterFactory
) -> None:
    adapter = make_adapter(
        params={"temperature": 0.5, "top_p": 0.9}, headers={"X-Team": "search"}, logprobs=True
    )
    await adapter.generate(
        call(
            params={
                "temperature": 0.1,
                "max_tokens": 64,
                "n": 5,
                "stream": False,
                "tools": [{"type": "function"}],
            }
        )
    )

    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.body == {
        "model": "fake-gpt",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0.1,  # the request wins over the tier's params
        "top_p": 0.9,
        "max_tokens": 64,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": True,
    }
    assert request.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert request.headers["X-Team"] == "search"


async def test_chat_messages_are_sent_as_given(
    server: FakeOpenAIServer, make_adapter: AdapterFactory
) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    await make_adapter().generate(call(messages=messages))
    assert server.requests[0].body["messages"] == messages


async def test_input_without_messages_or_prompt_is_rejected_without_a_call(
    server: FakeOpenAIServer, make_adapter: AdapterFactory
) -> None:
    with pytest.raises(ModelRequestRejected) as caught:
        await make_adapter().generate(call(features=[1, 2, 3]))
    assert caught.value.trigger == Trigger.BAD_REQUEST
    assert not caught.value.retryable
    assert server.request_count == 0


async def test_a_400_the_request_caused_is_a_bad_request(
    server: FakeOpenAIServer, make_adapter: AdapterFactory
) -> None:
    server.supports_prefill = False
    prefill = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello,"}]
    with pytest.raises(ModelRequestRejected, match="assistant_prefill_not_supported") as caught:
        await make_adapter().generate(call(messages=prefill))
    assert caught.value.trigger == Trigger.BAD_REQUEST
    assert not caught.value.retryable
    assert server.request_count == 1


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
async def test_a_non_finite_number_is_a_bad_request_without_a_call(
    server: FakeOpenAIServer, make_adapter: AdapterFactory, value: float
) -> None:
    with pytest.raises(ModelRequestRejected, match="cannot be sent as JSON") as caught:
        await make_adapter().generate(call(params={"temperature": value}))
    assert caught.value.trigger == Trigger.BAD_REQUEST
    assert server.request_count == 0


@pytest.mark.parametrize("stream", [True, False])
async def test_confidence_from_token_logprobs(
    server: FakeOpenAIServer, make_adapter: AdapterFactory, stream: bool
) -> None:
    server.token_logprobs = [-0.1, -0.2, -0.3, -1.0, -0.05, -0.4]
    mean_adapter = make_adapter(logprobs=True, stream=stream)
    p10_adapter = make_adapter(logprobs=True, stream=stream, confidence_from="p10_token_prob")

    by_mean = await mean_adapter.generate(call())
    by_p10 = await p10_adapter.generate(call())

    assert server.requests[0].body["logprobs"] is True
    expected_mean = math.exp(sum(server.token_logprobs) / 6)
    probs = sorted(math.exp(value) for value in server.token_logprobs)
    expected_p10 = probs[0] + (probs[1] - probs[0]) * 0.5  # position 0.1 * (6 - 1)
    assert by_mean.confidence == pytest.approx(expected_mean)
    assert by_mean.extra["p10_token_prob"] == pytest.approx(expected_p10)
    assert by_p10.confidence == pytest.approx(expected_p10)


@pytest.mark.parametrize("stream", [True, False])
async def test_tokens_are_estimated_when_the_server_sends_no_usage(
    server: FakeOpenAIServer, make_adapter: AdapterFactory, stream: bool
) -> None:
    server.send_usage = False
    prompt = "What is the capital of France?"
    generation = await make_adapter(stream=stream).generate(call(prompt))

    assert generation.extra["tokens_source"] == "estimate_4_chars_per_token"
    assert generation.tokens_out == math.ceil(len(REPLY) / 4)
    assert generation.tokens_in == 4 + math.ceil(len(prompt) / 4)
    assert generation.output["content"] == REPLY


@pytest.mark.parametrize("stream", [True, False])
async def test_tool_calls_are_returned_whole(
    server: FakeOpenAIServer, make_adapter: AdapterFactory, stream: bool
) -> None:
    server.tool_call = {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}
    generation = await make_adapter(stream=stream).generate(call())

    assert generation.finish_reason == "tool_calls"
    assert generation.output["tool_calls"] == [
        {
            "id": "call_fake",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'},
        }
    ]


async def test_non_streaming_answer(server: FakeOpenAIServer, make_adapter: AdapterFactory) -> None:
    generation = await make_adapter(stream=False).generate(call())

    assert server.requests[0].body["stream"] is False
    assert "stream_options" not in server.requests[0].body
    assert generation.output == {"content": REPLY, "role": "assistant"}
    assert generation.tokens_out == server.usage_for(server.requests[0].body)["completion_tokens"]


async def test_many_calls_in_flight_share_one_pool(
    server: FakeOpenAIServer, make_adapter: AdapterFactory
) -> None:
    # Calls beyond the pool wait for a connection; only the total limit applies here.
    adapter = make_adapter(
        tier={"max_in_flight": 4}, first_token_timeout_ms=None, stall_timeout_ms=None
    )
    generations = await asyncio.gather(*(adapter.generate(call(timeout_s=10.0)) for _ in range(20)))
    assert all(g.output["content"] == REPLY for g in generations)
    assert server.request_count == 20


# -------------------------------------------------------------- faults ----

# fault, fault options, error, trigger, retryable, words the message must contain
STREAM_FAULTS: list[tuple[OpenAIFault, dict[str, Any], type[ModelError], Trigger, bool, str]] = [
    (
        OpenAIFault.SLOW_FIRST_TOKEN,
        {"delay_s": SLOW_S},
        ModelTimeout,
        Trigger.TIMEOUT,
        True,
        "first_token_timeout_ms=300",
    ),
    (
        OpenAIFault.STALL_MID_STREAM,
        {"delay_s": SLOW_S},
        ModelTimeout,
        Trigger.TIMEOUT,
        True,
        "stall_timeout_ms=300",
    ),
    (
        OpenAIFault.SILENT,
        {"delay_s": SLOW_S},
        ModelTimeout,
        Trigger.TIMEOUT,
        True,
        "first_token_timeout_ms",
    ),
    (OpenAIFault.CUT_MID_STREAM, {}, StreamTruncated, Trigger.TRUNCATED, True, "stream cut"),
    (
        OpenAIFault.NO_END,
        {},
        StreamTruncated,
        Trigger.TRUNCATED,
        True,
        "without finish_reason or [DONE]",
    ),
    (OpenAIFault.MALFORMED_CHUNK, {}, MalformedResponse, Trigger.ERROR, False, "not JSON"),
    (OpenAIFault.RATE_LIMIT, {"retry_after": "2"}, RateLimited, Trigger.RATE_LIMITED, True, "429"),
    (OpenAIFault.SERVER_ERROR, {}, ModelUnavailable, Trigger.ERROR, True, "HTTP 500"),
    (
        OpenAIFault.SERVER_ERROR,
        {"status": 503},
        ModelUnavailable,
        Trigger.ERROR,
        True,
        "HTTP 503",
    ),
    (OpenAIFault.CONNECTION_RESET, {}, ModelUnavailable, Trigger.ERROR, True, "reset"),
    (
        OpenAIFault.CONTEXT_LENGTH_EXCEEDED,
        {},
        ContextLengthExceeded,
        Trigger.CONTEXT_LENGTH,
        False,
        "maximum context length is 8192",
    ),
    (
        OpenAIFault.CONTENT_POLICY,
        {},
        ContentPolicyViolation,
        Trigger.POLICY,
        False,
        "rejected as a result of our safety system",
    ),
    (
        OpenAIFault.CONTENT_FILTER_FINISH,
        {},
        ContentPolicyViolation,
        Trigger.POLICY,
        False,
        "finish_reason content_filter",
    ),
    (OpenAIFault.UNAUTHORIZED, {}, ModelAccessRefused, Trigger.ERROR, False, "HTTP 401"),
]

WHOLE_BODY_FAULTS: list[
    tuple[OpenAIFault, dict[str, Any], type[ModelError], Trigger, bool, str]
] = [
    (OpenAIFault.SILENT, {"delay_s": SLOW_S}, ModelTimeout, Trigger.TIMEOUT, True, "total limit"),
    (OpenAIFault.CUT_MID_STREAM, {}, StreamTruncated, Trigger.TRUNCATED, True, "body cut"),
    (OpenAIFault.NO_FINISH_REASON, {}, StreamTruncated, Trigger.TRUNCATED, True, "finish_reason"),
    (OpenAIFault.MALFORMED_CHUNK, {}, MalformedResponse, Trigger.ERROR, False, "not JSON"),
    (OpenAIFault.RATE_LIMIT, {"retry_after": "2"}, RateLimited, Trigger.RATE_LIMITED, True, "429"),
    (OpenAIFault.SERVER_ERROR, {}, ModelUnavailable, Trigger.ERROR, True, "HTTP 500"),
    (OpenAIFault.CONNECTION_RESET, {}, ModelUnavailable, Trigger.ERROR, True, "reset"),
    (
        OpenAIFault.CONTEXT_LENGTH_EXCEEDED,
        {},
        ContextLengthExceeded,
        Trigger.CONTEXT_LENGTH,
        False,
        "context",
    ),
    (OpenAIFault.CONTENT_POLICY, {}, ContentPolicyViolation, Trigger.POLICY, False, "safety"),
    (
        OpenAIFault.CONTENT_FILTER_FINISH,
        {},
        ContentPolicyViolation,
        Trigger.POLICY,
        False,
        "content_filter",
    ),
]


async def assert_fault(
    server: FakeOpenAIServer,
    adapter: OpenAIChatAdapter,
    fault: OpenAIFault,
    options: dict[str, Any],
    error_type: type[ModelError],
    trigger: Trigger,
    retryable: bool,
    words: str,
) -> ModelError:
    server.set_fault(fault, **options)
    started = time.perf_counter()
    answers: list[Generation] = []
    with pytest.raises(error_type) as caught:
        answers.append(await adapter.generate(call()))
    elapsed = time.perf_counter() - started
    error = caught.value

    assert answers == []  # no partial answer, ever
    assert error.trigger == trigger
    assert error.retryable is retryable
    assert words in str(error)
    assert server.request_count == 1  # the adapter never retries on its own
    assert elapsed < TOTAL_S + 0.5  # every fault ends by the call's total limit
    for text in [*error_texts(error), repr(adapter)]:
        assert_no_secret(text)
    assert REPLY not in str(error)  # the discarded partial answer does not leak either

    # The adapter stays healthy: the next call on the same client is served.
    server.set_fault(OpenAIFault.OK)
    recovered = await adapter.generate(call())
    assert recovered.output["content"] == REPLY
    return error


@pytest.mark.parametrize(
    ("fault", "options", "error_type", "trigger", "retryable", "words"),
    STREAM_FAULTS,
    ids=[f"{row[0].value}-{row[1].get('status', '')}".rstrip("-") for row in STREAM_FAULTS],
)
async def test_stream_fault(
    server: FakeOpenAIServer,
    make_adapter: AdapterFactory,
    fault: OpenAIFault,
    options: dict[str, Any],
    error_type: type[ModelError],
    trigger: Trigger,
    retryable: bool,
    words: str,
) -> None:
    adapter = make_adapter()
    await assert_fault(server, adapter, fault, options, error_type, trigger, retryable, words)


@pytest.mark.parametrize(
    ("fault", "options", "error_type", "trigger", "retryable", "words"),
    WHOLE_BODY_FAULTS,
    ids=[row[0].value for row in WHOLE_BODY_FAULTS],
)
async def test_non_streaming_fault(
    server: FakeOpenAIServer,
    make_adapter: AdapterFactory,
    fault: OpenAIFault,
    options: dict[str, Any],
    error_type: type[ModelError],
    trigger: Trigger,
    retryable: bool,
    words: str,
) -> None:
    adapter = make_adapter(stream=False)
    await assert_fault(server, adapter, fault, options, error_type, trigger, retryable, words)


@pytest.mark.parametrize(
    ("fault", "finish_reason", "missing"),
    [
        (OpenAIFault.NO_DONE, "stop", "[DONE]"),
        (OpenAIFault.CUT_AFTER_FINISH, "stop", "[DONE]"),
        (OpenAIFault.NO_FINISH_REASON, None, "finish_reason"),
    ],
)
async def test_a_stream_with_one_end_marker_is_complete(
    server: FakeOpenAIServer,
    make_adapter: AdapterFactory,
    caplog: pytest.LogCaptureFixture,
    fault: OpenAIFault,
    finish_reason: str | None,
    missing: str,
) -> None:
    """All the tokens and a finish_reason (or [DONE]) make a whole answer, whatever
    else is missing: it is served, once, and the missing marker is logged."""
    adapter = make_adapter()
    server.set_fault(fault)
    with caplog.at_level(logging.DEBUG, logger="streams.adapters.openai_chat"):
        first = await adapter.generate(call())
        second = await adapter.generate(call())
    for generation in (first, second):
        assert generation.output["content"] == REPLY
        assert generation.finish_reason == finish_reason
        assert generation.extra["tokens_source"] == "usage"
    assert server.request_count == 2
    lines = [r for r in caplog.records if f"without {missing}" in r.getMessage()]
    # INFO the first time, DEBUG after: a server that never sends it writes one line.
    assert [r.levelno for r in lines] == [logging.INFO, logging.DEBUG]
    assert not any("partial answer was discarded" in r.getMessage() for r in caplog.records)
    assert not any(REPLY in r.getMessage() for r in caplog.records)


async def test_timeouts_fire_at_their_own_limit(
    server: FakeOpenAIServer, make_adapter: AdapterFactory
) -> None:
    adapter = make_adapter()
    server.set_fault(OpenAIFault.SLOW_FIRST_TOKEN, delay_s=SLOW_S)
    started = time.perf_counter()
    with pytest.raises(ModelTimeout, match="first token"):
        await adapter.generate(call())
    assert FIRST_TOKEN_MS / 1000 <= time.perf_counter() - started < FIRST_TOKEN_MS / 1000 + 0.4

    # Without first-token and stall limits the call's total limit ends a silent upstream.
    plain = make_adapter(first_token_timeout_ms=None, stall_timeout_ms=None)
    server.set_fault(OpenAIFault.SILENT, delay_s=SLOW_S)
    started = time.perf_counter()
    with pytest.raises(ModelTimeout, match="total limit of 300 ms"):
        await plain.generate(call(timeout_s=0.3))
    assert 0.3 <= time.perf_counter() - started < 0.8

    # A stall limit alone also bounds the wait for the first chunk.
    stall_only = make_adapter(first_token_timeout_ms=None)
    server.set_fault(OpenAIFault.SILENT, delay_s=SLOW_S)
    with pytest.raises(ModelTimeout, match="stalled"):
        await stall_only.generate(call())


async def test_stream_slower_than_the_total_limit_times_out_even_without_stalls(
    server: FakeOpenAIServer, make_adapter: AdapterFactory
) -> None:
    # Each chunk arrives within the stall limit, but the whole answer takes too long.
    adapter = make_adapter(first_token_timeout_ms=400, stall_timeout_ms=400)
    server.set_fault(OpenAIFault.STALL_MID_STREAM, delay_s=0.3)
    with pytest.raises(ModelTimeout, match="total limit of 200 ms"):
        await adapter.generate(call(timeout_s=0.2))


async def test_rate_limit_retry_after_forms(
    server: FakeOpenAIServer, make_adapter: AdapterFactory
) -> None:
    adapter = make_adapter()

    server.set_fault(OpenAIFault.RATE_LIMIT, retry_after="7")
    with pytest.raises(RateLimited) as seconds:
        await adapter.generate(call())
    assert seconds.value.retry_after_s == 7.0

    server.set_fault(OpenAIFault.RATE_LIMIT, retry_after="7", retry_after_ms="1500")
    with pytest.raises(RateLimited) as milliseconds:
        await adapter.generate(call())
    assert milliseconds.value.retry_after_s == 1.5  # the precise header wins

    server.set_fault(OpenAIFault.RATE_LIMIT, retry_after=formatdate(time.time() + 30, usegmt=True))
    with pytest.raises(RateLimited) as http_date:
        await adapter.generate(call())
    assert http_date.value.retry_after_s == pytest.approx(30, abs=2)

    server.set_fault(OpenAIFault.SERVER_ERROR, status=503, retry_after="3")
    with pytest.raises(ModelUnavailable) as unavailable:
        await adapter.generate(call())
    assert unavailable.value.retry_after_s == 3.0
    assert server.request_count == 4


async def test_context_length_error_says_how_many_tokens_were_needed(
    server: FakeOpenAIServer, make_adapter: AdapterFactory
) -> None:
    server.set_fault(OpenAIFault.CONTEXT_LENGTH_EXCEEDED)
    with pytest.raises(ContextLengthExceeded) as caught:
        await make_adapter().generate(call())
    assert caught.value.needed_tokens == 9000


async def test_fail_the_first_calls_then_serve(
    server: FakeOpenAIServer, make_adapter: AdapterFactory
) -> None:
    adapter = make_adapter()
    server.set_fault(OpenAIFault.SERVER_ERROR, times=2, status=502)
    for _ in range(2):
        with pytest.raises(ModelUnavailable):
            await adapter.generate(call())
    generation = await adapter.generate(call())
    assert generation.output["content"] == REPLY
    assert [request.fault for request in server.requests] == ["server_error", "server_error", "ok"]


async def test_connection_refused_is_unavailable(make_adapter: AdapterFactory) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    adapter = make_adapter(base_url=f"http://127.0.0.1:{closed_port}/v1")
    with pytest.raises(ModelUnavailable, match="connection failed") as caught:
        await adapter.generate(call())
    assert caught.value.retryable


async def test_api_key_never_leaks(server: FakeOpenAIServer, make_adapter: AdapterFactory) -> None:
    adapter = make_adapter()
    assert_no_secret(repr(adapter), str(adapter), repr(adapter.config), adapter.config)

    # The upstream quotes the key it was given (worst case of a 401 body): it is masked.
    server.set_fault(OpenAIFault.UNAUTHORIZED)
    with pytest.raises(ModelAccessRefused) as caught:
        await adapter.generate(call())
    assert "Incorrect API key provided: ***" in str(caught.value)
    assert server.requests[0].headers["Authorization"] == f"Bearer {SECRET_KEY}"

    server.set_fault(OpenAIFault.OK)
    generation = await adapter.generate(call())
    assert_no_secret(repr(generation), *error_texts(caught.value))
