"""Child processes that cannot outlive their parent: started, awaited, stopped.

The embedded broker, demo/test workers and test gateways run in their own
process group (so a terminal's Ctrl-C reaches the parent first, which then
stops them in order: SIGTERM, then SIGKILL). If the parent dies without
cleaning up (SIGKILL, a CI timeout), Linux's parent-death signal ends the
child too: no orphan brokers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import yaml

from streams.config import FallbackConfig

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not glibc: fall back to explicit cleanup only
        pass


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen (None where prctl does not exist)."""
    return _die_with_parent if sys.platform.startswith("linux") else None


def spawn_in_own_group(
    argv: Sequence[str],
    stdout: int | IO[bytes],
    stderr: int | IO[bytes] = subprocess.STDOUT,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own process group, ended if we die."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=die_with_parent(),
        env=env,
    )


def kill_process_group(process: subprocess.Popen[bytes], wait_s: float = 10.0) -> None:
    """SIGKILL: the crash case, nothing flushed, nothing committed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=wait_s)


def stop_process_group(
    process: subprocess.Popen[bytes], timeout_s: float, kill_wait_s: float = 10.0
) -> int | None:
    """SIGTERM to the child's group; SIGKILL if it has not exited in `timeout_s`."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_process_group(process, kill_wait_s)
    return process.returncode


def config_as_yaml(config: FallbackConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=False), sort_keys=False)


@dataclass
class FallbackProcess:
    """`fallback <command> --config <config_path>` in a child process, output in `log_path`."""

    process: subprocess.Popen[bytes]
    config: FallbackConfig
    config_path: Path
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> int | None:
        return stop_process_group(self.process, timeout_s)

    def kill(self) -> None:
        """SIGKILL: the crash case, nothing flushed, nothing committed."""
        kill_process_group(self.process)

    def wait_http_ready(
        self,
        what: str,
        url: str,
        is_ready: Callable[[dict[str, Any]], bool],
        timeout_s: float,
        interval_s: float,
        request_timeout_s: float,
    ) -> dict[str, Any]:
        """Poll GET `url` until its JSON body `is_ready`; fail early if the child exits."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{what} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                last = httpx.get(url, timeout=request_timeout_s).json()
                if is_ready(last):
                    return dict(last)
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(interval_s)
        raise TimeoutError(f"{what} not ready in {timeout_s}s (last {last}):\n{self.log_tail()}")


ProcessT = TypeVar("ProcessT", bound=FallbackProcess)


def start_fallback_process(
    kind: type[ProcessT], command: str, config: FallbackConfig, directory: Path, loglevel: str
) -> ProcessT:
    """Write `config` to a file in `directory` and run `fallback <command>` on it."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / f"{command}-{os.getpid()}-{time.monotonic_ns()}.yaml"
    config_path.write_text(config_as_yaml(config))
    log_path = config_path.with_suffix(".log")
    argv = [sys.executable, "-m", "streams.ops.cli", command]
    argv += ["--config", str(config_path), "--loglevel", loglevel]
    with log_path.open("wb") as log_file:
        process = spawn_in_own_group(argv, stdout=log_file)
    return kind(process=process, config=config, config_path=config_path, log_path=log_path)
