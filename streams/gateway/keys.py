"""API keys to tenants.

The gateway keeps only SHA-256 digests: keys given by env-var reference are
hashed at start-up and the plain value is dropped.  A presented key is hashed
and looked up; what comes back is the key's *name* and tenant, which is all
that logs, metrics and the pipeline ever see.  The tenant comes from here
only: nothing in a request body can choose it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from schemas.errors import ConfigError
from streams.config.models import GatewayConfig, GatewayKeyConfig


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's name (never the key) and its tenant and limits."""

    key_name: str
    tenant: str
    requests_per_minute: int | None
    max_in_flight: int | None


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class KeyRing:
    """Digest of each configured key -> its caller."""

    def __init__(self, callers: dict[str, Caller]) -> None:
        self._callers = callers

    @classmethod
    def from_config(cls, gateway: GatewayConfig) -> KeyRing:
        """Reads every `key_env` now: a missing variable fails start-up naming the key."""
        return cls({_digest_of(entry): _caller(entry) for entry in gateway.keys})

    def caller(self, authorization: str | None) -> Caller | None:
        token = bearer_token(authorization)
        return None if token is None else self._callers.get(key_digest(token))

    def __len__(self) -> int:
        return len(self._callers)


def _digest_of(entry: GatewayKeyConfig) -> str:
    if entry.key_sha256 is not None:
        return entry.key_sha256
    secret = entry.key()
    assert secret is not None  # the model requires key_env or key_sha256
    if not secret.get_secret_value().strip():
        raise ConfigError(f"gateway.keys[{entry.name}].key_env: {entry.key_env} is empty")
    return key_digest(secret.get_secret_value())


def _caller(entry: GatewayKeyConfig) -> Caller:
    return Caller(
        key_name=entry.name,
        tenant=entry.tenant,
        requests_per_minute=entry.requests_per_minute,
        max_in_flight=entry.max_in_flight,
    )
