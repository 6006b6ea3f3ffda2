"""The analytics section of the config: where verdicts and responses are stored.

analytics/ owns its model so that it never imports streams/; the worker's
`FallbackConfig` composes it as `analytics:`.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from schemas.errors import ConfigError


class Strict(BaseModel):
    """Every config model: unknown keys are errors, values never change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def secret_from_env(variable: str | None, field: str) -> SecretStr | None:
    """A secret referenced by environment variable name (`*_env` keys)."""
    if variable is None:
        return None
    value = os.environ.get(variable)
    if value is None:
        raise ConfigError(f"{field}: environment variable {variable} is not set")
    return SecretStr(value)


class AnalyticsConfig(Strict):
    enabled: bool = True
    backend: Literal["chdb", "clickhouse"] = "chdb"
    #: chDB data directory; unset, `<worker.data_dir>/chdb` (the worker's config fills it in)
    chdb_path: str | None = None
    url: str = "http://localhost:8123"
    database: str = Field(default="model_fallback", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    username: str = "default"
    password_env: str | None = None
    batch_max_rows: int = Field(default=5000, ge=1)
    batch_max_wait_ms: int = Field(default=1000, ge=1)

    def password(self) -> SecretStr | None:
        return secret_from_env(self.password_env, "analytics.password_env")
