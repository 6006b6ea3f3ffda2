"""The pooled HTTP client both HTTP adapters (`openai_chat`, `open_inference`) use,
and the one way they turn a request body into an HTTP request."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from pydantic import SecretStr

from streams.adapters.errors import ModelRequestRejected
from streams.adapters.http_errors import Redactor


def upstream_client(
    base_url: str,
    headers: dict[str, str],
    api_key: SecretStr | None,
    max_in_flight: int,
    connect_timeout_s: float,
) -> tuple[httpx.AsyncClient, Redactor]:
    """A client sized to the tier's calls in flight, sending the key as a Bearer header,
    and the `Redactor` that keeps that key out of every error message.

    Connecting is bounded by `connect_timeout_s` (the tier's timeout): the call's
    limits start only once the request is sent, so without it an upstream that
    drops connection attempts would hold a call until the request's deadline.
    A connect timeout is an `error` (`ConnectTimeout`), never a `timeout`."""
    secret = api_key.get_secret_value() if api_key is not None else None
    sent = {**headers}
    if secret:
        sent["Authorization"] = f"Bearer {secret}"
    client = httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        headers=sent,
        # The adapters' own limits (total, first token, stall) bound every wait once
        # the request is sent; the wait for a pooled connection is bounded by the deadline.
        timeout=httpx.Timeout(None, connect=connect_timeout_s),
        limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight),
    )
    return client, Redactor([secret])


def json_request(
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    *,
    where: str,
    headers: dict[str, str] | None = None,
    on_sent: Callable[[], None] | None = None,
) -> httpx.Request:
    """A POST of `body` as JSON, or `ModelRequestRejected` when the request holds what
    JSON cannot carry (NaN, infinity): that is the request's fault, not the tier's.

    `on_sent` is called once the request's first bytes are about to go on the
    wire: after the wait for a pooled connection and after connecting, so the
    adapter can start its time limits there (see `CallClock`).  httpcore's
    `trace` extension reports that moment (`http11.send_request_headers.started`,
    or `http2.` for HTTP/2); an exception raised by `on_sent` aborts the request
    before anything is written.
    """
    try:
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelRequestRejected(f"{where}: the request cannot be sent as JSON: {exc}") from None
    sent = {"Content-Type": "application/json", **(headers or {})}
    extensions = {} if on_sent is None else {"trace": _trace_sending(on_sent)}
    return client.build_request(
        "POST", path, content=content.encode(), headers=sent, extensions=extensions
    )


def _trace_sending(on_sent: Callable[[], None]) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith(".send_request_headers.started"):
            on_sent()

    return trace
