"""A gateway in a child process, for the tests and the bench: started, awaited, stopped.

Like `streams/ops/worker_process.py` for workers: `fallback gateway` with a
config file written here, in its own process group, always ended on exit
(see `streams/ops/child_process.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from streams.config import FallbackConfig
from streams.ops.child_process import FallbackProcess, start_fallback_process


class GatewayProcess(FallbackProcess):
    @property
    def url(self) -> str:
        assert self.config.gateway is not None
        return f"http://{self.config.gateway.host}:{self.config.gateway.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as `base_url`."""
        return self.url + "/v1"

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.url + "/health", timeout=5.0).json()
        return body

    def wait_ready(self, timeout_s: float = 60.0) -> dict[str, Any]:
        return self.wait_http_ready(
            "gateway",
            self.url + "/health",
            lambda health: bool(health.get("ready")),
            timeout_s,
            interval_s=0.1,
            request_timeout_s=5.0,
        )


def start_gateway_process(
    config: FallbackConfig, workdir: Path, loglevel: str = "warning"
) -> GatewayProcess:
    return start_fallback_process(GatewayProcess, "gateway", config, workdir, loglevel)


@contextlib.contextmanager
def running_gateway(
    config: FallbackConfig, workdir: Path, loglevel: str = "warning"
) -> Iterator[GatewayProcess]:
    gateway = start_gateway_process(config, workdir, loglevel)
    try:
        yield gateway
    finally:
        gateway.stop()
