"""A real aiohttp server on 127.0.0.1 in a background thread with its own event loop.

The thread keeps the fake upstream independent of the test's event loop, so the
same server serves adapter tests and end-to-end tests where a Faust worker runs
in the test process.  Use it as a (sync or async) context manager, or call
`start()` / `stop()`.  Faults are set through a thread-safe `FaultSwitch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received, for assertions."""

    number: int  # 1-based, in arrival order
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it was not JSON
    fault: str  # the fault this request was answered with


@dataclass
class FaultPlan:
    fault: str
    remaining: int | None  # None: every request; N: the next N requests, then "ok"
    options: dict[str, Any] = field(default_factory=dict)


class FaultSwitch:
    """Which fault the next request gets; settable from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan = FaultPlan("ok", None)

    def set(self, fault: str, *, times: int | None = None, **options: Any) -> None:
        """`times=N` applies the fault to the next N requests only ("fail the first N calls")."""
        with self._lock:
            self._plan = FaultPlan(str(fault), times, options)

    def take(self) -> tuple[str, dict[str, Any]]:
        with self._lock:
            plan = self._plan
            if plan.remaining is None:
                return plan.fault, dict(plan.options)
            if plan.remaining > 0:
                plan.remaining -= 1
                return plan.fault, dict(plan.options)
            return "ok", dict(plan.options)


class ThreadedAiohttpServer:
    """Subclasses build the `web.Application`; this runs it until `stop()`."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, backlog: int = 128) -> None:
        self.host = host
        self.port = port
        # The listen backlog: a small one makes an upstream that admits few connections
        # at once (the kernel drops the rest of a burst's SYNs; clients retry after 1 s).
        self.backlog = backlog
        self.faults = FaultSwitch()
        self._records: list[RecordedRequest] = []
        self._records_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # -------------------------------------------------------- subclass API --

    def build_app(self) -> web.Application:
        raise NotImplementedError

    def set_fault(self, fault: str, *, times: int | None = None, **options: Any) -> None:
        self.faults.set(fault, times=times, **options)

    def reset(self) -> None:
        """Back to `ok` with no recorded requests (call between tests)."""
        self.faults.set("ok")
        with self._records_lock:
            self._records.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._records_lock:
            return list(self._records)

    @property
    def request_count(self) -> int:
        with self._records_lock:
            return len(self._records)

    def record(self, request: web.Request, body: Any, fault: str) -> RecordedRequest:
        with self._records_lock:
            recorded = RecordedRequest(
                number=len(self._records) + 1,
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                body=body,
                fault=fault,
            )
            self._records.append(recorded)
            return recorded

    async def hold(self, seconds: float) -> None:
        """Sleep in a handler, but wake at once when the server stops (so stop is quick)."""
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    @staticmethod
    def reset_connection(request: web.Request) -> None:
        """Close the TCP connection with RST (SO_LINGER 0), the way a crashed upstream does."""
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    @staticmethod
    def close_connection(request: web.Request) -> None:
        """Flush what was written, then FIN: the body ends early without its terminator."""
        if request.transport is not None:
            request.transport.close()

    # ------------------------------------------------------------ lifecycle --

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        if self._thread is not None:
            return self
        self._ready.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"{type(self).__name__}-{id(self):x}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"{type(self).__name__} did not start within 30 s")
        if self._startup_error is not None:
            self._thread = None
            raise RuntimeError(f"{type(self).__name__} failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(self._begin_stop)
        thread.join(30)
        self._thread = None

    def _begin_stop(self) -> None:
        assert self._stopping is not None and self._loop is not None
        self._stopping.set()
        self._loop.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        # handler_cancellation: a client that hangs up cancels the handler, like a real server.
        self._runner = web.AppRunner(
            self.build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=self.backlog)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)
