"""The shared HTTP failure mapping, on the bodies real servers send."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import pytest

from schemas.events import Trigger
from streams.adapters.errors import (
    ContentPolicyViolation,
    ContextLengthExceeded,
    ModelAccessRefused,
    ModelError,
    ModelRequestRejected,
    ModelUnavailable,
    RateLimited,
)
from streams.adapters.http_errors import (
    ProviderError,
    Redactor,
    error_from_provider,
    error_from_status,
    parse_retry_after,
)

NO_SECRETS = Redactor([])


def classify(status: int, body: bytes, headers: dict[str, str] | None = None) -> ModelError:
    return error_from_status(
        status, httpx.Headers(headers or {}), body, where="tier t (m)", redact=NO_SECRETS
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "12"}, 12.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"Retry-After": "12", "retry-after-ms": "250"}, 0.25),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-3"}, 0.0),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers)) == expected


def test_parse_retry_after_http_date() -> None:
    now = time.time()
    headers = httpx.Headers({"Retry-After": formatdate(now + 60, usegmt=True)})
    assert parse_retry_after(headers, now=now) == pytest.approx(60, abs=1)
    past = httpx.Headers({"Retry-After": formatdate(now - 60, usegmt=True)})
    assert parse_retry_after(past, now=now) == 0.0


def test_vllm_context_length_message_without_code() -> None:
    body = (
        b'{"object":"error","message":"This model\'s maximum context length is 4096 tokens. '
        b'However, you requested 5000 tokens (4000 in the messages, 1000 in the completion).",'
        b'"type":"BadRequestError","param":null,"code":400}'
    )
    error = classify(400, body)
    assert isinstance(error, ContextLengthExceeded)
    assert error.needed_tokens == 5000


def test_azure_content_filter_keeps_the_provider_reason() -> None:
    body = (
        b'{"error":{"message":"The response was filtered due to the prompt triggering Azure '
        b'OpenAI\'s content management policy.","type":null,"param":"prompt",'
        b'"code":"content_filter","status":400,'
        b'"innererror":{"code":"ResponsibleAIPolicyViolation"}}}'
    )
    error = classify(400, body)
    assert isinstance(error, ContentPolicyViolation)
    assert "content management policy" in str(error)
    assert not error.retryable


def test_insufficient_quota_is_not_retried() -> None:
    body = b'{"error":{"message":"You exceeded your current quota","code":"insufficient_quota"}}'
    quota = classify(429, body)
    assert type(quota) is ModelAccessRefused and not quota.retryable
    assert quota.trigger is Trigger.ERROR  # the tier's quota: counts against its health
    assert type(classify(429, b"slow down", {"Retry-After": "1"})) is RateLimited


ANTHROPIC_PREFILL = (
    b'{"error":{"message":"This model does not support assistant message prefill.",'
    b'"type":"invalid_request_error","code":"assistant_prefill_not_supported"}}'
)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, ANTHROPIC_PREFILL),
        (400, b'{"error":{"message":"Invalid value for temperature","code":"invalid_value"}}'),
        (413, b"request entity too large"),
        (422, b'{"detail":[{"msg":"field required"}]}'),
    ],
)
def test_a_4xx_the_request_caused_is_bad_request(status: int, body: bytes) -> None:
    error = classify(status, body)
    assert type(error) is ModelRequestRejected
    assert error.trigger is Trigger.BAD_REQUEST
    assert not error.retryable


@pytest.mark.parametrize("status", [301, 401, 403, 404])
def test_a_refused_key_url_or_model_is_the_tiers_fault(status: int) -> None:
    error = classify(status, b'{"error":{"message":"no","code":"invalid_api_key"}}')
    assert type(error) is ModelAccessRefused
    assert error.trigger is Trigger.ERROR
    assert not error.retryable


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_server_side_statuses_are_retryable(status: int) -> None:
    error = classify(status, b"<html>upstream error</html>")
    assert isinstance(error, ModelUnavailable)
    assert error.retryable
    assert "upstream error" in str(error)


def test_error_object_inside_a_stream() -> None:
    provider = ProviderError.from_body({"error": {"message": "overloaded", "type": "server_error"}})
    error = error_from_provider(None, provider, where="tier t (m)", redact=NO_SECRETS)
    assert isinstance(error, ModelUnavailable)
    assert "error in stream" in str(error)


def test_redactor_masks_the_key_and_its_quoted_ends() -> None:
    secret = "sk-proj-abcdefgh12345678ZYXWVUTS"
    redact = Redactor([secret, None])
    assert redact(f"key {secret} bad") == "key *** bad"
    assert secret[:8] not in redact(f"Incorrect API key provided: {secret[:8]}****{secret[-8:]}")
    assert secret[-8:] not in redact(f"Incorrect API key provided: {secret[:8]}****{secret[-8:]}")


def test_long_provider_messages_are_cut() -> None:
    error = classify(400, b'{"error": {"message": "' + b"x" * 5000 + b'"}}')
    assert len(str(error)) < 700
