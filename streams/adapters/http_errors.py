"""HTTP status, provider error bodies and transport failures → `ModelError`, in one place.

Both HTTP adapters (`openai_chat`, `open_inference`) map failures through here so a
429 or a 503 means the same verdict whichever protocol the tier speaks:

    429                                   RateLimited(retry_after_s)   retryable
    429, code insufficient_quota          ModelAccessRefused           billing, not a rate
    408, 5xx                              ModelUnavailable             retryable
    4xx, code context_length_exceeded     ContextLengthExceeded        not retryable
    4xx, code content_policy_violation /
         content_filter                   ContentPolicyViolation       provider's message kept
    401, 403, 404, 3xx                    ModelAccessRefused           the tier's key, URL, model
    other 4xx                             ModelRequestRejected         bad_request: the request's
                                                                       fault, not the tier's
    connect / reset before an answer      ModelUnavailable             retryable

401/403/404 are kept apart from the other 4xx because no request can cause
them: the key, the URL and the model name come from the tier's config (a
request's params cannot change them), so they say the tier is broken.

Every message that may quote the provider goes through `Redactor`, because some
providers echo (part of) the API key back in their 401 bodies.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from streams.adapters.errors import (
    ContentPolicyViolation,
    ContextLengthExceeded,
    ModelAccessRefused,
    ModelError,
    ModelRequestRejected,
    ModelUnavailable,
    RateLimited,
)

# A provider message is evidence for the verdict, not a log dump: keep it short.
MAX_PROVIDER_MESSAGE_CHARS = 500
# Error bodies are read whole before mapping; a misbehaving upstream cannot make us buffer more.
MAX_ERROR_BODY_BYTES = 64 * 1024

CONTEXT_LENGTH_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
CONTENT_POLICY_CODES = frozenset(
    {"content_policy_violation", "content_filter", "responsibleaipolicyviolation"}
)
# The tier's key, endpoint or model is refused: the tier's fault, not the request's.
ACCESS_STATUSES = frozenset({401, 403, 404})
# Servers without error codes (vLLM, llama.cpp, Ollama) say it in words.
CONTEXT_LENGTH_WORDS = re.compile(
    r"maximum context length|context length|context window|prompt is too long|too many tokens",
    re.IGNORECASE,
)
NEEDED_TOKENS = re.compile(r"(?:resulted in|requested|you requested) (\d+) tokens", re.IGNORECASE)


class Redactor:
    """Replaces secrets (and their longer prefixes/suffixes, as providers quote masked keys)."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self._secrets = [secret for secret in secrets if secret]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
            # "Incorrect API key provided: sk-abc1***********wxyz" quotes head and tail.
            if len(secret) >= 16:
                for part in (secret[:8], secret[-8:]):
                    text = text.replace(part, "***")
        return text


class ProviderError:
    """The `error` object of an OpenAI-style body (also `{"error": "text"}` of KServe)."""

    def __init__(self, code: str | None, kind: str | None, message: str) -> None:
        self.code = code
        self.kind = kind
        self.message = message

    @classmethod
    def from_body(cls, body: bytes | str | dict[str, Any] | None) -> ProviderError:
        data: Any = body
        if isinstance(body, bytes | str):
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
                return cls(None, None, text.strip())
        if not isinstance(data, dict):
            return cls(None, None, "" if data is None else str(data))
        error = data.get("error", data)
        if isinstance(error, str):
            return cls(None, None, error)
        if not isinstance(error, dict):
            return cls(None, None, json.dumps(data)[:MAX_PROVIDER_MESSAGE_CHARS])
        code = error.get("code")
        inner = error.get("innererror")
        if isinstance(inner, dict) and inner.get("code"):
            code = code or inner.get("code")
        message = error.get("message") or error.get("detail") or ""
        kind = error.get("type")
        return cls(
            str(code) if code is not None else None,
            str(kind) if kind is not None else None,
            str(message),
        )

    def codes(self) -> set[str]:
        return {value.lower() for value in (self.code, self.kind) if value}


def parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait: `retry-after-ms` (OpenAI, precise), else `Retry-After` (seconds or date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            value = float(milliseconds) / 1000
            if value >= 0:
                return value
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)


def error_from_status(
    status: int,
    headers: httpx.Headers,
    body: bytes,
    *,
    where: str,
    redact: Redactor,
) -> ModelError:
    """The error for a non-2xx answer; `where` names the tier and model for the verdict."""
    provider = ProviderError.from_body(body)
    retry_after_s = parse_retry_after(headers)
    return error_from_provider(
        status, provider, where=where, redact=redact, retry_after_s=retry_after_s
    )


def error_from_provider(
    status: int | None,
    provider: ProviderError,
    *,
    where: str,
    redact: Redactor,
    retry_after_s: float | None = None,
) -> ModelError:
    """Classify one provider error; `status` is None for an error object sent inside a stream."""
    quoted = redact(provider.message)[:MAX_PROVIDER_MESSAGE_CHARS]
    label = f"HTTP {status}" if status is not None else "error in stream"
    code_note = f" (code {provider.code})" if provider.code else ""
    detail = f"{where}: {label}{code_note}: {quoted}" if quoted else f"{where}: {label}{code_note}"
    codes = provider.codes()

    if codes & CONTENT_POLICY_CODES:
        return ContentPolicyViolation(detail)
    if codes & CONTEXT_LENGTH_CODES or (
        status in {400, 413, 422, None} and CONTEXT_LENGTH_WORDS.search(provider.message)
    ):
        match = NEEDED_TOKENS.search(provider.message)
        return ContextLengthExceeded(detail, needed_tokens=int(match.group(1)) if match else None)
    if status == 429:
        if "insufficient_quota" in codes:
            # Billing quota, not a rate: waiting does not help, so it is not retryable.
            return ModelAccessRefused(detail)
        return RateLimited(detail, retry_after_s=retry_after_s)
    if status is None or status == 408 or status >= 500:
        return ModelUnavailable(detail, retry_after_s=retry_after_s)
    if status in ACCESS_STATUSES or not 400 <= status < 500:
        # 3xx too: httpx follows no redirects, so the tier's base_url is wrong.
        return ModelAccessRefused(detail)
    return ModelRequestRejected(detail)


def error_from_transport(exc: httpx.TransportError, *, where: str, redact: Redactor) -> ModelError:
    """A failure before any answer arrived: refused, reset, closed without a response."""
    reason = redact(str(exc))
    detail = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    return ModelUnavailable(f"{where}: connection failed or reset before an answer ({detail})")


async def read_error_body(response: httpx.Response) -> bytes:
    """At most `MAX_ERROR_BODY_BYTES` of an error answer; a cut error body is still an error."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_ERROR_BODY_BYTES:
                break
    except httpx.TransportError:
        pass
    return b"".join(chunks)[:MAX_ERROR_BODY_BYTES]
