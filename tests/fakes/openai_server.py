"""A local server speaking OpenAI's chat-completions protocol, with faults on demand.

    with FakeOpenAIServer(reply="Paris is the capital of France.") as server:
        config = OpenAIChatConfig(kind="openai_chat", base_url=server.base_url, model="fake-gpt")
        server.set_fault(OpenAIFault.SERVER_ERROR, times=2, status=503)   # first 2 calls fail
        ...
        assert server.request_count == 3

Streaming answers are SSE `data: {chunk}` lines: a role chunk, one chunk per word
(`choices[0].delta.content`, with `logprobs` when the request asks), a chunk with
`finish_reason`, a usage chunk when `stream_options.include_usage`, then `data: [DONE]`.
Error bodies are the ones OpenAI sends.

`supports_prefill=False` answers, like Anthropic's OpenAI-compatible endpoint for
models without prefill, every request whose last message is the assistant's with
400 `assistant_prefill_not_supported`: an error the request causes, whatever the fault.

Fault options (keyword arguments of `set_fault`): `delay_s` (slow_first_token,
stall_mid_stream, silent), `status` (server_error: 500 by default),
`retry_after` / `retry_after_ms` (rate_limit, server_error headers).
"""

from __future__ import annotations

import json
import re
import time
from enum import StrEnum
from typing import Any

from aiohttp import web

from tests.fakes.threaded_server import ThreadedAiohttpServer


class OpenAIFault(StrEnum):
    OK = "ok"
    SLOW_FIRST_TOKEN = "slow_first_token"  # role chunk at once, then `delay_s` before content
    STALL_MID_STREAM = "stall_mid_stream"  # half the words, `delay_s` pause, the rest
    CUT_MID_STREAM = "cut_mid_stream"  # half the words, then the connection is aborted
    NO_DONE = "no_done"  # finish_reason and usage sent, stream closed cleanly without [DONE]
    NO_FINISH_REASON = "no_finish_reason"  # [DONE] sent, but no chunk had a finish_reason
    NO_END = "no_end"  # all the words, then a clean close: no finish_reason and no [DONE]
    CUT_AFTER_FINISH = "cut_after_finish"  # finish_reason and usage, then the connection drops
    MALFORMED_CHUNK = "malformed_chunk"  # a chunk that is not JSON in the middle
    RATE_LIMIT = "rate_limit"  # 429 with Retry-After (+ retry-after-ms when given)
    SERVER_ERROR = "server_error"  # 500 (or `status`) with OpenAI's server_error body
    CONNECTION_RESET = "connection_reset"  # TCP RST before any answer
    SILENT = "silent"  # accept, never answer (until `delay_s` or server stop)
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # 400, code context_length_exceeded
    CONTENT_POLICY = "content_policy"  # 400, code content_policy_violation
    CONTENT_FILTER_FINISH = "content_filter_finish"  # stream ends with finish_reason content_filter
    UNAUTHORIZED = "unauthorized"  # 401 quoting the presented API key in full (worst case)


STREAM_FAULTS_WITH_DELAY = {OpenAIFault.SLOW_FIRST_TOKEN, OpenAIFault.STALL_MID_STREAM}

CONTEXT_LENGTH_BODY = {
    "error": {
        "message": (
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9000 tokens. Please reduce the length of the messages."
        ),
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
CONTENT_POLICY_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your prompt may contain "
    "text that is not allowed by our safety system."
)
CONTENT_POLICY_BODY = {
    "error": {
        "message": CONTENT_POLICY_MESSAGE,
        "type": "invalid_request_error",
        "param": None,
        "code": "content_policy_violation",
    }
}
RATE_LIMIT_BODY = {
    "error": {
        "message": (
            "Rate limit reached for gpt-4o in organization org-fake on requests per min (RPM): "
            "Limit 3, Used 3, Requested 1. Please try again in 20s."
        ),
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
PREFILL_BODY = {
    "error": {
        "message": "This model does not support assistant message prefill. "
        "The conversation must end with a user message.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "assistant_prefill_not_supported",
    }
}
SERVER_ERROR_BODY = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}


def split_words(text: str) -> list[str]:
    """The fake's "tokens": words with their trailing space."""
    return re.findall(r"\S+\s*", text) or [text]


class FakeOpenAIServer(ThreadedAiohttpServer):
    """OpenAI chat completions at `base_url` (`http://127.0.0.1:<port>/v1`)."""

    def __init__(
        self,
        *,
        reply: str = "The capital of France is Paris.",
        token_logprobs: list[float] | None = None,
        send_usage: bool = True,
        tool_call: dict[str, str] | None = None,
        supports_prefill: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 128,
    ) -> None:
        super().__init__(host=host, port=port, backlog=backlog)
        self.reply = reply
        # One logprob per word, cycled; the default gives a confident model.
        self.token_logprobs = token_logprobs or [-0.05, -0.2, -0.01, -0.5, -0.1]
        self.send_usage = send_usage
        self.tool_call = tool_call  # {"name": ..., "arguments": "<json>"} replaces the text reply
        self.supports_prefill = supports_prefill

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def reset(self) -> None:
        super().reset()

    # ------------------------------------------------------------ answers --

    def usage_for(self, body: dict[str, Any]) -> dict[str, int]:
        """Deterministic counts tests can recompute: 4 per message + its words; 1 per word out."""
        prompt = sum(4 + len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion = len(self.words())
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def words(self) -> list[str]:
        if self.tool_call is not None:
            return []
        return split_words(self.reply)

    def logprob(self, index: int) -> float:
        return self.token_logprobs[index % len(self.token_logprobs)]

    def logprob_entry(self, word: str, index: int) -> dict[str, Any]:
        return {
            "token": word,
            "logprob": self.logprob(index),
            "bytes": list(word.encode()),
            "top_logprobs": [],
        }

    # ------------------------------------------------------------- server --

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.list_models)
        return app

    async def list_models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "fake-gpt", "object": "model"}]}
        )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        raw = await request.text()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        fault_name, options = self.faults.take()
        fault = OpenAIFault(fault_name)
        self.record(request, body, fault.value)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return web.json_response(
                {
                    "error": {
                        "message": "'messages' is required",
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": None,
                    }
                },
                status=400,
            )
        messages = body["messages"]
        if (
            not self.supports_prefill
            and messages
            and isinstance(messages[-1], dict)
            and messages[-1].get("role") == "assistant"
        ):
            return web.json_response(PREFILL_BODY, status=400)

        match fault:
            case OpenAIFault.CONNECTION_RESET:
                self.reset_connection(request)
                return web.Response(status=500)  # never written: the socket is gone
            case OpenAIFault.SILENT:
                await self.hold(options.get("delay_s", 60.0))
                self.reset_connection(request)
                return web.Response(status=500)
            case OpenAIFault.RATE_LIMIT:
                headers = {"Retry-After": str(options.get("retry_after", "1"))}
                if "retry_after_ms" in options:
                    headers["retry-after-ms"] = str(options["retry_after_ms"])
                return web.json_response(RATE_LIMIT_BODY, status=429, headers=headers)
            case OpenAIFault.SERVER_ERROR:
                headers = {}
                if "retry_after" in options:
                    headers["Retry-After"] = str(options["retry_after"])
                return web.json_response(
                    SERVER_ERROR_BODY, status=int(options.get("status", 500)), headers=headers
                )
            case OpenAIFault.CONTEXT_LENGTH_EXCEEDED:
                return web.json_response(CONTEXT_LENGTH_BODY, status=400)
            case OpenAIFault.CONTENT_POLICY:
                return web.json_response(CONTENT_POLICY_BODY, status=400)
            case OpenAIFault.UNAUTHORIZED:
                key = request.headers.get("Authorization", "").removeprefix("Bearer ")
                return web.json_response(
                    {
                        "error": {
                            "message": f"Incorrect API key provided: {key}. You can find "
                            "your API key at https://platform.openai.com/account/api-keys.",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": "invalid_api_key",
                        }
                    },
                    status=401,
                )
            case _:
                pass
        if body.get("stream"):
            return await self.stream_answer(request, body, fault, options)
        return await self.whole_answer(request, body, fault, options)

    def chunk(
        self,
        delta: dict[str, Any],
        *,
        finish_reason: str | None = None,
        logprobs: list[dict[str, Any]] | None = None,
        with_usage_field: bool = False,
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": "fake-gpt-2024-01-01",
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": {"content": logprobs, "refusal": None} if logprobs else None,
                    "finish_reason": finish_reason,
                }
            ],
        }
        if with_usage_field:
            chunk["usage"] = None
        return chunk

    async def stream_answer(
        self,
        request: web.Request,
        body: dict[str, Any],
        fault: OpenAIFault,
        options: dict[str, Any],
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            },
        )
        await response.prepare(request)
        wants_logprobs = bool(body.get("logprobs"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def send(data: dict[str, Any] | str) -> None:
            text = data if isinstance(data, str) else json.dumps(data)
            await response.write(f"data: {text}\n\n".encode())

        await send(self.chunk({"role": "assistant", "content": ""}, with_usage_field=include_usage))
        if fault is OpenAIFault.SLOW_FIRST_TOKEN:
            await self.hold(options.get("delay_s", 1.0))

        words = self.words()
        half = max(1, len(words) // 2)
        for index, word in enumerate(words):
            if index == half:
                if fault is OpenAIFault.STALL_MID_STREAM:
                    await self.hold(options.get("delay_s", 1.0))
                elif fault is OpenAIFault.CUT_MID_STREAM:
                    self.close_connection(request)
                    return response
                elif fault is OpenAIFault.MALFORMED_CHUNK:
                    await send('{"choices": [{"index": 0, "delta": {"content": "oo')
            logprobs = [self.logprob_entry(word, index)] if wants_logprobs else None
            await send(
                self.chunk({"content": word}, logprobs=logprobs, with_usage_field=include_usage)
            )
        if self.tool_call is not None:
            arguments = self.tool_call["arguments"]
            cut = len(arguments) // 2
            first = {
                "index": 0,
                "id": "call_fake",
                "type": "function",
                "function": {"name": self.tool_call["name"], "arguments": arguments[:cut]},
            }
            second = {"index": 0, "function": {"arguments": arguments[cut:]}}
            await send(self.chunk({"tool_calls": [first]}, with_usage_field=include_usage))
            await send(self.chunk({"tool_calls": [second]}, with_usage_field=include_usage))

        if fault not in {OpenAIFault.NO_FINISH_REASON, OpenAIFault.NO_END}:
            finish = {
                OpenAIFault.CONTENT_FILTER_FINISH: "content_filter",
            }.get(fault, "tool_calls" if self.tool_call is not None else "stop")
            await send(self.chunk({}, finish_reason=finish, with_usage_field=include_usage))
        if include_usage and self.send_usage:
            usage_chunk = self.chunk({}, with_usage_field=True)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self.usage_for(body)
            await send(usage_chunk)
        if fault is OpenAIFault.CUT_AFTER_FINISH:
            self.close_connection(request)
            return response
        if fault not in {OpenAIFault.NO_DONE, OpenAIFault.NO_END}:
            await send("[DONE]")
        await response.write_eof()
        return response

    async def whole_answer(
        self,
        request: web.Request,
        body: dict[str, Any],
        fault: OpenAIFault,
        options: dict[str, Any],
    ) -> web.StreamResponse:
        if fault in STREAM_FAULTS_WITH_DELAY:
            await self.hold(options.get("delay_s", 1.0))
        words = self.words()
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(words) or None,
            "refusal": None,
        }
        finish_reason: str | None = "stop"
        if self.tool_call is not None:
            message["tool_calls"] = [
                {"id": "call_fake", "type": "function", "function": dict(self.tool_call)}
            ]
            finish_reason = "tool_calls"
        if fault is OpenAIFault.CONTENT_FILTER_FINISH:
            finish_reason = "content_filter"
        if fault in {OpenAIFault.NO_FINISH_REASON, OpenAIFault.NO_DONE, OpenAIFault.NO_END}:
            finish_reason = None
        logprobs = (
            {"content": [self.logprob_entry(w, i) for i, w in enumerate(words)], "refusal": None}
            if body.get("logprobs")
            else None
        )
        answer: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "fake-gpt-2024-01-01",
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": finish_reason,
                }
            ],
        }
        if self.send_usage:
            answer["usage"] = self.usage_for(body)
        text = json.dumps(answer)
        if fault is OpenAIFault.MALFORMED_CHUNK:
            return web.Response(text=text[: len(text) // 2], content_type="application/json")
        if fault is OpenAIFault.CUT_MID_STREAM:
            # Promise the whole body, send half of it, then drop the connection.
            response = web.StreamResponse(
                status=200,
                headers={"Content-Type": "application/json", "Content-Length": str(len(text))},
            )
            await response.prepare(request)
            await response.write(text[: len(text) // 2].encode())
            self.close_connection(request)
            return response
        return web.Response(text=text, content_type="application/json")


__all__ = ["FakeOpenAIServer", "OpenAIFault", "split_words"]
