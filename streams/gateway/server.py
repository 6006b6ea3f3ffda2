"""`fallback gateway`: build the aiohttp application and run it.

aiohttp because it is already the project's HTTP server stack (Faust's web
pages run on it, and the test fakes): one server stack, no new dependency,
and its `StreamResponse` is all SSE needs.  See docs/gateway.md.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from schemas.errors import ConfigError
from streams.config import FallbackConfig
from streams.config.models import GatewayConfig
from streams.gateway.keys import KeyRing
from streams.gateway.limits import KeyLimits
from streams.gateway.pipeline_link import PipelineLink
from streams.gateway.routes import GatewayRoutes, openai_errors

log = logging.getLogger(__name__)

#: on SIGTERM, calls under way get this long to finish before the link closes
SHUTDOWN_GRACE_S = 10.0


def build_gateway(config: FallbackConfig) -> web.Application:
    """The application; keys are read (and hashed) now, Kafka starts with the app."""
    if config.gateway is None:
        raise ConfigError("the config has no gateway: section (see docs/gateway.md)")
    if config.kafka.bootstrap_servers is None:
        raise ConfigError("kafka.bootstrap_servers is not set: pass --bootstrap")
    link = PipelineLink(config)
    routes = GatewayRoutes(
        gateway=config.gateway,
        keys=KeyRing.from_config(config.gateway),
        limits=KeyLimits(),
        link=link,
    )
    # The body may be at most what the worker takes (larger requests are dead-lettered).
    app = web.Application(
        middlewares=[openai_errors], client_max_size=config.worker.max_request_bytes
    )
    routes.add_to(app)

    async def kafka_link(_: web.Application) -> AsyncIterator[None]:
        await link.start()
        yield
        await link.stop()

    app.cleanup_ctx.append(kafka_link)
    return app


def run_gateway(app: web.Application, gateway: GatewayConfig) -> None:
    """Serve `app` (from `build_gateway`); blocks until SIGINT/SIGTERM."""
    log.info("gateway listening on http://%s:%d", gateway.host, gateway.port)
    web.run_app(
        app,
        host=gateway.host,
        port=gateway.port,
        access_log=None,  # no per-request log line (and so no header in any log)
        handler_cancellation=True,  # a caller that hangs up stops waiting: its response is late
        shutdown_timeout=SHUTDOWN_GRACE_S,
        print=None,
    )
