"""A worker in a child process, for the demo and the tests: started, awaited, stopped.

The child runs `fallback worker` with a config file written here; it lives in
its own process group and is always ended (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from streams.config import FallbackConfig
from streams.ops.child_process import die_with_parent


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    config: FallbackConfig
    config_path: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.config.worker.web_host}:{self.config.worker.web_port}"

    def get(self, path: str, timeout_s: float = 30.0, **params: Any) -> Any:
        response = httpx.get(self.url + path, params=params, timeout=timeout_s)
        response.raise_for_status()
        return response.json()

    def wait_ready(self, timeout_s: float = 60.0, partitions: int | None = None) -> dict[str, Any]:
        """Until the worker answers /health/ with its partitions assigned."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"worker exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                last = httpx.get(self.url + "/health/", timeout=2.0).json()
                assigned = last.get("assigned_partitions", 0)
                if last.get("ready") and (partitions is None or assigned >= partitions):
                    return dict(last)
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {timeout_s}s (last {last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the crash case, nothing flushed, nothing committed."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def config_as_yaml(config: FallbackConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=False), sort_keys=False)


def start_worker_process(
    config: FallbackConfig, workdir: Path | None = None, loglevel: str = "warning"
) -> WorkerProcess:
    directory = workdir or Path(tempfile.mkdtemp(prefix="fallback-worker-"))
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / f"worker-{os.getpid()}-{time.monotonic_ns()}.yaml"
    config_path.write_text(config_as_yaml(config))
    log_path = config_path.with_suffix(".log")
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams.ops.cli",
            "worker",
            "--config",
            str(config_path),
            "--loglevel",
            loglevel,
        ],
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )
    log_file.close()
    return WorkerProcess(process=process, config=config, config_path=config_path, log_path=log_path)


@contextlib.contextmanager
def running_worker(config: FallbackConfig, workdir: Path | None = None) -> Iterator[WorkerProcess]:
    worker = start_worker_process(config, workdir)
    try:
        yield worker
    finally:
        worker.stop()
