"""The pooled HTTP client both HTTP adapters (`openai_chat`, `open_inference`) use,
and the one way they turn a request body into an HTTP request."""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import SecretStr

from streams.adapters.errors import ModelRequestRejected
from streams.adapters.http_errors import Redactor


def upstream_client(
    base_url: str, headers: dict[str, str], api_key: SecretStr | None, max_in_flight: int
) -> tuple[httpx.AsyncClient, Redactor]:
    """A client sized to the tier's calls in flight, sending the key as a Bearer header,
    and the `Redactor` that keeps that key out of every error message."""
    secret = api_key.get_secret_value() if api_key is not None else None
    sent = {**headers}
    if secret:
        sent["Authorization"] = f"Bearer {secret}"
    client = httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        headers=sent,
        # The adapters' own deadlines (total, first token, stall) bound every wait.
        timeout=httpx.Timeout(None),
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
) -> httpx.Request:
    """A POST of `body` as JSON, or `ModelRequestRejected` when the request holds what
    JSON cannot carry (NaN, infinity): that is the request's fault, not the tier's."""
    try:
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelRequestRejected(f"{where}: the request cannot be sent as JSON: {exc}") from None
    sent = {"Content-Type": "application/json", **(headers or {})}
    return client.build_request("POST", path, content=content.encode(), headers=sent)
