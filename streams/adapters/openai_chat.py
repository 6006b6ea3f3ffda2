"""Adapter for OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM).

It asks for a stream so it can hold the upstream to three limits: time to first
token, stall between chunks, and the call's total time.  The stream is collected
in full before anything is returned, and the caller never sees part of an answer:
a stream that was cut (the connection dropped), or that closed without either
end marker (a `finish_reason` or `[DONE]`), raises `StreamTruncated`.  One end
marker is enough: servers and proxies differ on which they send (some omit
`[DONE]` after a `finish_reason` and usage), and either says the server finished
the answer; the missing one is logged.

Token counts come from the `usage` block.  When a server sends none, they are
estimated at ~4 characters per token (OpenAI's rule of thumb for English): no
installed package can count offline here (tiktoken fetches its BPE files over
the network at run time).  `Generation.extra["tokens_source"]` says which was used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource

from streams.adapters.base import Generation, ModelCall
from streams.adapters.errors import (
    ContentPolicyViolation,
    MalformedResponse,
    ModelRequestRejected,
    ModelTimeout,
    StreamTruncated,
)
from streams.adapters.http_client import json_request, upstream_client
from streams.adapters.http_errors import (
    ProviderError,
    error_from_provider,
    error_from_status,
    error_from_transport,
    read_error_body,
)
from streams.config import OpenAIChatConfig, TierConfig

logger = logging.getLogger(__name__)

# Only these request params reach the provider: a request cannot switch on `n`, tools
# or streaming behind the operator's back.
SAMPLING_PARAM_KEYS = frozenset(
    {
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
    }
)
CHARS_PER_TOKEN = 4
# OpenAI's accounting adds a few tokens of framing per chat message.
TOKENS_PER_MESSAGE = 4
POLICY_FINISH_REASONS = frozenset({"content_filter"})


def estimate_tokens(text: str) -> int:
    """~4 characters per token; a non-empty text is at least one token."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):  # multi-part content: count the text parts
            content = " ".join(
                str(part.get("text", "")) for part in content if isinstance(part, dict)
            )
        total += TOKENS_PER_MESSAGE + estimate_tokens(str(content or ""))
    return total


def token_prob_confidence(logprobs: list[float]) -> dict[str, float]:
    """`mean_token_prob` = exp(mean logprob) (geometric mean); `p10_token_prob` = 10th
    percentile of the token probabilities (linear interpolation, as numpy's default)."""
    probs = sorted(math.exp(value) for value in logprobs)
    position = 0.1 * (len(probs) - 1)
    low = math.floor(position)
    high = min(low + 1, len(probs) - 1)
    p10 = probs[low] + (probs[high] - probs[low]) * (position - low)
    return {
        "mean_token_prob": math.exp(sum(logprobs) / len(logprobs)),
        "p10_token_prob": p10,
    }


@dataclass
class ChatAnswer:
    """What has been collected of one answer, from a stream or a whole body."""

    content: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    provider_model: str | None = None
    saw_done: bool = False
    first_token_at: float | None = None

    def add_tool_call_delta(self, delta: dict[str, Any]) -> None:
        """Streamed tool calls arrive in pieces keyed by index; arguments are concatenated."""
        index = int(delta.get("index", len(self.tool_calls)))
        call = self.tool_calls.setdefault(
            index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("type"):
            call["type"] = delta["type"]
        function = delta.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]

    def add_logprobs(self, logprobs: Any) -> None:
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            for entry in logprobs["content"]:
                if isinstance(entry, dict) and isinstance(entry.get("logprob"), int | float):
                    self.logprobs.append(float(entry["logprob"]))

    def text(self) -> str:
        return "".join(self.content)


class OpenAIChatAdapter:
    """`generate` returns a whole chat answer or raises a `ModelError` naming its trigger."""

    def __init__(self, config: OpenAIChatConfig, tier: TierConfig) -> None:
        self.config = config
        self.tier = tier
        self.model_name = config.model
        self._where = f"tier {tier.name} ({config.model})"
        self._client, self._redact = upstream_client(
            config.base_url,
            config.headers,
            config.api_key(),
            tier.max_in_flight,
            connect_timeout_s=tier.timeout_ms / 1000,
        )
        self._missing_end_markers: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"OpenAIChatAdapter(tier={self.tier.name!r}, model={self.config.model!r}, "
            f"base_url={self.config.base_url!r}, stream={self.config.stream})"
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def request_body(self, call: ModelCall) -> dict[str, Any]:
        messages = call.input.get("messages")
        if messages is None and isinstance(call.input.get("prompt"), str):
            messages = [{"role": "user", "content": call.input["prompt"]}]
        if not isinstance(messages, list) or not messages:
            raise ModelRequestRejected(
                f"{self._where}: input needs a non-empty `messages` list or a `prompt` string"
            )
        body: dict[str, Any] = {"model": self.config.model, "messages": messages}
        body.update(self.config.params)
        body.update({k: v for k, v in call.params.items() if k in SAMPLING_PARAM_KEYS})
        if self.config.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        else:
            body["stream"] = False
        if self.config.logprobs:
            body["logprobs"] = True
        return body

    async def generate(self, call: ModelCall) -> Generation:
        body = self.request_body(call)
        deadline = Deadline(asyncio.get_running_loop(), call.timeout_s)
        answer = ChatAnswer()

        def on_sent() -> None:
            # The limits start now, not while the call waited for a pooled connection.
            call.clock.sent()
            if self.config.stream:
                deadline.start_first_token(
                    self.config.first_token_timeout_ms, self.config.stall_timeout_ms
                )
            else:
                deadline.start_total()

        try:
            async with asyncio.timeout(None) as timer:
                deadline.timer = timer
                call.clock.queued()
                response = await self._send(body, on_sent)
                try:
                    await self._read_answer(response, answer, deadline)
                finally:
                    await response.aclose()  # on any error this drops the connection
        except TimeoutError:
            raise ModelTimeout(f"{self._where}: {deadline.describe()}") from None
        return self._generation(body, answer, deadline.started)

    async def _send(self, body: dict[str, Any], on_sent: Callable[[], None]) -> httpx.Response:
        """Send and wait for the status line; a failure here means nothing was answered."""
        headers = {"Accept": "text/event-stream"} if self.config.stream else {}
        request = json_request(
            self._client,
            "chat/completions",
            body,
            where=self._where,
            headers=headers,
            on_sent=on_sent,
        )
        try:
            return await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, where=self._where, redact=self._redact) from None

    async def _read_answer(
        self, response: httpx.Response, answer: ChatAnswer, deadline: Deadline
    ) -> None:
        if response.status_code >= 300:
            raise error_from_status(
                response.status_code,
                response.headers,
                await read_error_body(response),
                where=self._where,
                redact=self._redact,
            )
        if "text/event-stream" in response.headers.get("content-type", ""):
            await self._read_stream(response, answer, deadline)
        else:
            # Non-streaming mode, or a proxy that ignored `stream: true`: one JSON body.
            self._read_whole_body(await self._read_body(response), answer)

    async def _read_stream(
        self, response: httpx.Response, answer: ChatAnswer, deadline: Deadline
    ) -> None:
        try:
            async with aclosing(EventSource(response).aiter_sse()) as events:
                async for event in events:
                    if self._take_event(event.data, answer, deadline):
                        break
        except httpx.TransportError as exc:
            if answer.finish_reason is None:
                raise StreamTruncated(
                    f"{self._where}: stream cut after {deadline.chunks} chunks "
                    f"({type(exc).__name__}); the partial answer was discarded"
                ) from None
            # Cut after the finish_reason: nothing of the answer was lost.
        if answer.finish_reason in POLICY_FINISH_REASONS:
            return  # a refusal, complete or not: `_generation` raises ContentPolicyViolation
        if answer.finish_reason is None and not answer.saw_done:
            raise StreamTruncated(
                f"{self._where}: stream closed without finish_reason or [DONE] after "
                f"{deadline.chunks} chunks; the partial answer was discarded"
            )
        if not (answer.saw_done and answer.finish_reason is not None):
            self._log_missing_end_marker("[DONE]" if answer.finish_reason else "finish_reason")

    def _log_missing_end_marker(self, missing: str) -> None:
        """At INFO the first time per tier (an operator learns how the server behaves),
        then at DEBUG: a server that never sends it must not write a line per call."""
        level = logging.DEBUG if missing in self._missing_end_markers else logging.INFO
        self._missing_end_markers.add(missing)
        logger.log(
            level,
            "%s: stream ended without %s; the other end marker came, so the answer "
            "is complete and was kept",
            self._where,
            missing,
        )

    def _take_event(self, data: str, answer: ChatAnswer, deadline: Deadline) -> bool:
        """Add one SSE data payload to the answer; True at `[DONE]`."""
        if data.strip() == "[DONE]":
            answer.saw_done = True
            return True
        try:
            chunk = json.loads(data)
        except ValueError:
            # The chunk itself is not quoted: it may hold part of the answer.
            raise MalformedResponse(
                f"{self._where}: stream chunk {deadline.chunks + 1} is not JSON "
                f"({len(data)} characters)"
            ) from None
        if not isinstance(chunk, dict):
            raise MalformedResponse(f"{self._where}: stream chunk is not a JSON object")
        if chunk.get("error"):
            raise error_from_provider(
                None, ProviderError.from_body(chunk), where=self._where, redact=self._redact
            )
        try:
            self._take_chunk(chunk, answer, deadline)
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            raise MalformedResponse(
                f"{self._where}: stream chunk {deadline.chunks + 1} has an unexpected shape "
                f"({type(exc).__name__})"
            ) from None
        deadline.chunk_arrived(answer)
        return False

    def _take_chunk(self, chunk: dict[str, Any], answer: ChatAnswer, deadline: Deadline) -> None:
        answer.provider_model = chunk.get("model") or answer.provider_model
        if isinstance(chunk.get("usage"), dict):
            answer.usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise MalformedResponse(f"{self._where}: stream chunk `choices` is not a list")
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1 is never requested; ignore other choices
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                answer.content.append(delta["content"])
                deadline.token_arrived(answer)
            for tool_delta in delta.get("tool_calls") or []:
                answer.add_tool_call_delta(tool_delta)
                deadline.token_arrived(answer)
            answer.add_logprobs(choice.get("logprobs"))
            if choice.get("finish_reason"):
                answer.finish_reason = str(choice["finish_reason"])
                deadline.token_arrived(answer)

    async def _read_body(self, response: httpx.Response) -> bytes:
        try:
            return await response.aread()
        except httpx.TransportError as exc:
            raise StreamTruncated(
                f"{self._where}: body cut ({type(exc).__name__}); the partial answer was discarded"
            ) from None

    def _read_whole_body(self, raw: bytes, answer: ChatAnswer) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            raise MalformedResponse(f"{self._where}: response body is not JSON") from None
        if not isinstance(data, dict):
            raise MalformedResponse(f"{self._where}: response body is not a JSON object")
        if data.get("error"):
            raise error_from_provider(
                None, ProviderError.from_body(data), where=self._where, redact=self._redact
            )
        try:
            self._take_whole_body(data, answer)
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            raise MalformedResponse(
                f"{self._where}: response has an unexpected shape ({type(exc).__name__})"
            ) from None

    def _take_whole_body(self, data: dict[str, Any], answer: ChatAnswer) -> None:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise MalformedResponse(f"{self._where}: response has no choices")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise MalformedResponse(f"{self._where}: response choice has no message")
        if isinstance(message.get("content"), str):
            answer.content.append(message["content"])
        for index, tool_call in enumerate(message.get("tool_calls") or []):
            answer.tool_calls[index] = tool_call
        answer.add_logprobs(choice.get("logprobs"))
        answer.finish_reason = choice.get("finish_reason")
        if answer.finish_reason is None:
            raise StreamTruncated(
                f"{self._where}: response has no finish_reason; the answer may be incomplete"
            )
        answer.saw_done = True
        answer.provider_model = data.get("model")
        if isinstance(data.get("usage"), dict):
            answer.usage = data["usage"]

    def _generation(self, body: dict[str, Any], answer: ChatAnswer, started: float) -> Generation:
        if answer.finish_reason in POLICY_FINISH_REASONS:
            raise ContentPolicyViolation(
                f"{self._where}: provider stopped the answer with finish_reason "
                f"{answer.finish_reason}; what it sent was not served"
            )
        text = answer.text()
        output: dict[str, Any] = {"content": text, "role": "assistant"}
        if answer.tool_calls:
            output["tool_calls"] = [answer.tool_calls[i] for i in sorted(answer.tool_calls)]
        extra: dict[str, Any] = {"provider_model": answer.provider_model}
        usage = answer.usage or {}
        tokens_in = usage.get("prompt_tokens")
        tokens_out = usage.get("completion_tokens")
        if isinstance(tokens_in, int) and isinstance(tokens_out, int):
            extra["tokens_source"] = "usage"
        else:
            extra["tokens_source"] = "estimate_4_chars_per_token"
            tokens_in = estimate_prompt_tokens(body["messages"])
            tool_text = "".join(
                json.dumps(call.get("function", {})) for call in output.get("tool_calls", [])
            )
            tokens_out = estimate_tokens(text + tool_text)
        confidence = self.tier.default_confidence
        if answer.logprobs:
            token_probs = token_prob_confidence(answer.logprobs)
            extra.update(token_probs)
            confidence = token_probs[self.config.confidence_from]
        if answer.first_token_at is not None:
            extra["first_token_ms"] = round((answer.first_token_at - started) * 1000, 3)
        return Generation(
            output=output,
            model=self.config.model,
            confidence=confidence,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            finish_reason=answer.finish_reason,
            extra=extra,
        )


class Deadline:
    """One `asyncio.timeout` re-armed to the nearest of the three limits, remembering
    which one it is so the `ModelTimeout` message can say which limit fired."""

    def __init__(self, loop: asyncio.AbstractEventLoop, total_s: float) -> None:
        self.loop = loop
        # Until the request is sent nothing is armed: time waiting for a connection
        # is the caller's (queue time, bounded by the request's deadline).
        self.started = loop.time()
        self.total_s = total_s
        self.total_at = self.started + total_s
        self.timer: asyncio.Timeout | None = None
        self.limit = "total"
        self.stall_s: float | None = None
        self.first_token_ms: float | None = None
        self.chunks = 0

    def _arm(self, phase_at: float | None, limit: str) -> None:
        assert self.timer is not None
        if phase_at is not None and phase_at < self.total_at:
            self.timer.reschedule(phase_at)
            self.limit = limit
        else:
            self.timer.reschedule(self.total_at)
            self.limit = "total"

    def _start(self) -> None:
        self.started = self.loop.time()
        self.total_at = self.started + self.total_s

    def start_total(self) -> None:
        """The request is on the wire: only the total limit runs (no streaming)."""
        self._start()
        self.arm_total()

    def arm_total(self) -> None:
        self._arm(None, "total")

    def start_first_token(self, first_token_ms: float | None, stall_ms: float | None) -> None:
        """The request is on the wire: the first-token (or stall) limit runs."""
        self._start()
        self.stall_s = stall_ms / 1000 if stall_ms is not None else None
        self.first_token_ms = first_token_ms
        if first_token_ms is not None:
            self._arm(self.started + first_token_ms / 1000, "first_token")
        elif self.stall_s is not None:
            self._arm(self.started + self.stall_s, "stall")
        else:
            self.arm_total()

    def token_arrived(self, answer: ChatAnswer) -> None:
        if answer.first_token_at is None:
            answer.first_token_at = self.loop.time()

    def chunk_arrived(self, answer: ChatAnswer) -> None:
        """After the first token each chunk restarts the stall clock; before it the
        first-token limit keeps running (role-only chunks do not count as tokens)."""
        self.chunks += 1
        if answer.first_token_at is None and self.limit == "first_token":
            return
        if self.stall_s is not None:
            self._arm(self.loop.time() + self.stall_s, "stall")
        else:
            self.arm_total()

    def describe(self) -> str:
        if self.limit == "first_token":
            return f"no first token within first_token_timeout_ms={self.first_token_ms:g}"
        if self.limit == "stall":
            assert self.stall_s is not None
            return (
                f"stream stalled: no chunk within stall_timeout_ms={self.stall_s * 1000:g} "
                f"after {self.chunks} chunks"
            )
        return f"no complete answer within the total limit of {self.total_s * 1000:g} ms"


__all__ = [
    "SAMPLING_PARAM_KEYS",
    "OpenAIChatAdapter",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "token_prob_confidence",
]
