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


class SqlEndpointConfig(Strict):
    """`fallback sql` through a worker: its /sql/ page (streams/web/sql.py)."""

    enabled: bool = Field(
        default=False, description="serve read-only SQL on the worker's /sql/ page"
    )
    max_rows: int = Field(default=10_000, ge=1, le=1_000_000, description="rows per answer")
    timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="ClickHouse's max_execution_time per query"
    )
    token_env: str | None = Field(
        default=None,
        description="environment variable holding the bearer token /sql/ requires; "
        "needed when worker.web_host is not a loopback address",
    )

    def token(self) -> SecretStr | None:
        return secret_from_env(self.token_env, "analytics.sql.token_env")


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
    store_output: bool = Field(
        default=False,
        description="keep each response's answer text in responses.output (opt-in)",
    )
    output_ttl_days: int = Field(
        default=30, ge=1, le=3650, description="days a stored answer text is kept"
    )
    sql: SqlEndpointConfig = SqlEndpointConfig()

    def password(self) -> SecretStr | None:
        return secret_from_env(self.password_env, "analytics.password_env")
