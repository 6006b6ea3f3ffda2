"""A pipeline `Response` becomes OpenAI's answer.

    served       200 chat.completion: model = the model that served,
                 choices[0].message = the accepted answer, usage when the output carries it
    unavailable  503 {"error": {"message": "Unable to generate reliable response.",
                 "type": "server_error", "code": "unavailable", "attempts": [per tier]}}
    invalid      400 {"error": {"message": "Invalid request: ...", "code": "invalid_request"}}

Headers on every outcome: x-fallback-request-id, x-fallback-attempts, the
pipeline's own x-fallback-latency-ms (created_at -> decision) and
x-fallback-cost-usd, and x-fallback-served-by when a tier served; answers also
carry Server-Timing (pipeline, and the responses hop back to the gateway).
"""

from __future__ import annotations

import json
from typing import Any

from schemas.events import UNAVAILABLE_MESSAGE, Response
from streams.gateway.errors import ApiError


def fallback_headers(response: Response, hop_ms: float | None = None) -> dict[str, str]:
    headers = {
        "x-fallback-request-id": response.request_id,
        "x-fallback-attempts": str(len(response.attempts)),
        "x-fallback-latency-ms": f"{response.latency_ms:.1f}",
        "x-fallback-cost-usd": f"{response.cost_usd:.6f}",
    }
    if response.served_by is not None:
        headers["x-fallback-served-by"] = response.served_by
    if hop_ms is not None:
        # The standard way to say where the time went: the pipeline, then the
        # responses topic's hop back to this gateway.
        headers["Server-Timing"] = (
            f"pipeline;dur={response.latency_ms:.1f}, responses-hop;dur={hop_ms:.1f}"
        )
    return headers


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def answer_message(output: Any) -> dict[str, Any]:
    """The assistant message of an output: `openai_chat` outputs are messages
    already; any other output becomes its text (JSON for structured outputs)."""
    if (
        isinstance(output, dict)
        and "content" in output
        and isinstance(output["content"], str | None)
    ):
        message: dict[str, Any] = {"role": "assistant", "content": output.get("content")}
        if output.get("tool_calls"):
            message["tool_calls"] = output["tool_calls"]
        return message
    text = output if isinstance(output, str) else json.dumps(output, separators=(",", ":"))
    return {"role": "assistant", "content": text}


def usage_of(output: Any) -> dict[str, int] | None:
    """OpenAI usage when the output carries it (the Response itself has no token counts)."""
    usage = output.get("usage") if isinstance(output, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def finish_reason(message: dict[str, Any]) -> str:
    return "tool_calls" if message.get("tool_calls") else "stop"


def created(response: Response) -> int:
    return int(response.completed_at.timestamp())


def completion(response: Response) -> dict[str, Any]:
    """A `chat.completion` object for a served response."""
    message = answer_message(response.output)
    return {
        "id": completion_id(response.request_id),
        "object": "chat.completion",
        "created": created(response),
        "model": response.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(message),
            }
        ],
        "usage": usage_of(response.output),
        "system_fingerprint": None,
    }


def completion_chunks(response: Response, include_usage: bool) -> list[dict[str, Any]]:
    """The same answer as `chat.completion.chunk` objects: role and content, the
    finish reason, and a usage chunk when the caller asked for one."""
    message = answer_message(response.output)
    base = {
        "id": completion_id(response.request_id),
        "object": "chat.completion.chunk",
        "created": created(response),
        "model": response.model,
        "system_fingerprint": None,
    }

    def chunk(delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        body = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
        }
        if include_usage:
            body["usage"] = None
        return body

    delta: dict[str, Any] = {"role": "assistant", "content": message["content"]}
    if message.get("tool_calls"):
        delta["tool_calls"] = [
            {"index": index, **call} for index, call in enumerate(message["tool_calls"])
        ]
    chunks = [chunk(delta, None), chunk({}, finish_reason(message))]
    if include_usage:
        chunks.append({**base, "choices": [], "usage": usage_of(response.output)})
    return chunks


def outcome_error(response: Response) -> ApiError:
    """The error for a response that was not served (unavailable or invalid)."""
    headers = fallback_headers(response)
    if response.status == "unavailable":
        headers["x-should-retry"] = "false"  # every tier was tried already
        return ApiError(
            503,
            UNAVAILABLE_MESSAGE,
            type="server_error",
            code="unavailable",
            headers=headers,
            extra={
                "request_id": response.request_id,
                "attempts": [
                    {
                        "tier": attempt.tier,
                        "trigger": attempt.trigger.value if attempt.trigger else None,
                        "reasons": attempt.reasons,
                    }
                    for attempt in response.attempts
                ],
            },
        )
    return ApiError(
        400,
        response.message or "Invalid request.",
        type="invalid_request_error",
        code="invalid_request",
        headers=headers,
    )
