"""The worker's /sql/ page: read-only SQL on the analytics store it holds.

A chDB directory is held by the worker's process, so `fallback sql` asks the
worker while one runs.  Who may ask:

- off unless `analytics.sql.enabled`; then POST `{"sql": "SELECT ..."}`;
- the worker's pages bind to `worker.web_host`, loopback by default; bound
  beyond loopback, the worker refuses to start unless `analytics.sql.token_env`
  names an environment variable holding a token;
- with a token configured, every request must send `Authorization: Bearer <token>`;
- what runs is one SELECT, read-only, at most `analytics.sql.max_rows` rows and
  `analytics.sql.timeout_s` seconds (analytics/read_only_sql.py).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any

import faust
from faust.web import Request, Response, View

from analytics.errors import AnalyticsError, AnalyticsUnavailable, SqlRefused
from analytics.read_only_sql import run_read_only
from schemas.errors import ConfigError
from streams.config import FallbackConfig
from streams.stages.context import Pipeline


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond this machine


def check_sql_access(config: FallbackConfig) -> None:
    """Start-up check: an enabled SQL page bound beyond loopback needs a token."""
    sql = config.analytics.sql
    if not sql.enabled:
        return
    if sql.token_env is None and not is_loopback(config.worker.web_host):
        raise ConfigError(
            f"analytics.sql.token_env must name a token variable: the SQL endpoint is "
            f"enabled and worker.web_host {config.worker.web_host!r} is not loopback"
        )
    sql.token()  # the variable must be set: ConfigError naming it otherwise


def register_sql_page(app: faust.App, pipeline: Pipeline) -> None:
    settings = pipeline.config.analytics.sql
    check_sql_access(pipeline.config)
    token = settings.token()

    @app.page("/sql/")
    class ReadOnlySql(View):
        async def post(self, request: Request) -> Response:
            if not settings.enabled:
                return self.json(
                    {"error": "the SQL endpoint is off (analytics.sql.enabled: false)"},
                    status=404,
                )
            if token is not None and not _authorized(request, token.get_secret_value()):
                return self.json(
                    {"error": "missing or wrong token (Authorization: Bearer <token>)"},
                    status=401,
                )
            if pipeline.sink is None:
                return self.json({"error": "analytics.enabled is false"}, status=404)
            try:
                body: Any = json.loads(await request.read())
                sql = body["sql"]
                max_rows = min(int(body.get("max_rows") or settings.max_rows), settings.max_rows)
            except (ValueError, KeyError, TypeError):
                return self.json({"error": 'send JSON: {"sql": "SELECT ..."}'}, status=400)
            if not isinstance(sql, str):
                return self.json({"error": '"sql" must be a string'}, status=400)
            try:
                result = await pipeline.sink.run(
                    lambda backend: run_read_only(
                        backend, sql, max_rows=max_rows, timeout_s=settings.timeout_s
                    )
                )
            except SqlRefused as exc:
                return self.json({"error": str(exc), "refused": True}, status=400)
            except AnalyticsUnavailable as exc:
                return self.json({"error": str(exc)}, status=503)
            except AnalyticsError as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json(result.model_dump(mode="json"))


def _authorized(request: Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip(), token)
