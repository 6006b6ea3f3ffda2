"""A worker in a child process, for the demo and the tests: started, awaited, stopped.

The child runs `fallback worker` with a config file written here; it lives in
its own process group and is always ended (SIGTERM, then SIGKILL) on exit
(see `streams/ops/child_process.py`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from streams.config import FallbackConfig
from streams.ops.child_process import FallbackProcess, start_fallback_process


class WorkerProcess(FallbackProcess):
    @property
    def url(self) -> str:
        return f"http://{self.config.worker.web_host}:{self.config.worker.web_port}"

    def get(self, path: str, timeout_s: float = 30.0, **params: Any) -> Any:
        response = httpx.get(self.url + path, params=params, timeout=timeout_s)
        response.raise_for_status()
        return response.json()

    def wait_ready(self, timeout_s: float = 60.0, partitions: int | None = None) -> dict[str, Any]:
        """Until the worker answers /health/ with its partitions assigned."""

        def is_ready(health: dict[str, Any]) -> bool:
            assigned = health.get("assigned_partitions", 0)
            return bool(health.get("ready")) and (partitions is None or assigned >= partitions)

        return self.wait_http_ready(
            "worker",
            self.url + "/health/",
            is_ready,
            timeout_s,
            interval_s=0.2,
            request_timeout_s=2.0,
        )


def start_worker_process(
    config: FallbackConfig, workdir: Path | None = None, loglevel: str = "warning"
) -> WorkerProcess:
    directory = workdir or Path(tempfile.mkdtemp(prefix="fallback-worker-"))
    return start_fallback_process(WorkerProcess, "worker", config, directory, loglevel)


@contextlib.contextmanager
def running_worker(config: FallbackConfig, workdir: Path | None = None) -> Iterator[WorkerProcess]:
    worker = start_worker_process(config, workdir)
    try:
        yield worker
    finally:
        worker.stop()
