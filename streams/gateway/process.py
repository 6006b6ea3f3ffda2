"""A gateway in a child process, for the tests and the bench: started, awaited, stopped.

Like `streams/ops/worker_process.py` for workers: `fallback gateway` with a
config file written here, in its own process group, always ended on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from streams.config import FallbackConfig
from streams.ops.child_process import die_with_parent
from streams.ops.worker_process import config_as_yaml


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    config: FallbackConfig
    config_path: Path
    log_path: Path

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
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gateway exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                last = self.health()
                if last.get("ready"):
                    return dict(last)
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"gateway not ready in {timeout_s}s (last {last}):\n{self.log_tail()}")

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
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode


def start_gateway_process(
    config: FallbackConfig, workdir: Path, loglevel: str = "warning"
) -> GatewayProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"gateway-{os.getpid()}-{time.monotonic_ns()}.yaml"
    config_path.write_text(config_as_yaml(config))
    log_path = config_path.with_suffix(".log")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.ops.cli",
                "gateway",
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
    return GatewayProcess(process, config, config_path, log_path)


@contextlib.contextmanager
def running_gateway(
    config: FallbackConfig, workdir: Path, loglevel: str = "warning"
) -> Iterator[GatewayProcess]:
    gateway = start_gateway_process(config, workdir, loglevel)
    try:
        yield gateway
    finally:
        gateway.stop()
