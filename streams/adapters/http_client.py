"""The pooled HTTP client both HTTP adapters (`openai_chat`, `open_inference`) use."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

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
