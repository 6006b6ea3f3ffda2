"""A local server speaking ClickHouse's HTTP interface, backed by chDB, with faults on demand.

Every statement clickhouse-connect sends (the query in the POST body or the
`query` parameter, an INSERT's data after it) runs in a chDB session of this
process, so the real `ClickHouseServerBackend` and its migrations work against
it unchanged.  Errors come back as ClickHouse sends them: the HTTP status its
handler maps the code to, an `X-ClickHouse-Exception-Code` header and a
`Code: N. DB::Exception: ...` body.

    with FakeClickHouseServer(tmp_path / "chdb") as server:       # server.url
        server.refuse_connections()          # nothing listens on the port
        server.accept_connections()
        server.set_fault(ClickHouseFault.SERVER_ERROR)          # every request: bare 500
        server.set_fault(ClickHouseFault.TOO_MANY_PARTS, times=3)  # the next 3 INSERTs
        server.inserted_rows("verdicts")     # rows the store accepted, in order

Only what the project's backend uses is spoken: uncompressed bodies, the
query's own FORMAT clause (chDB renders Native, JSONEachRow, TabSeparated).
Of the URL settings, only `readonly` and `max_execution_time` are applied (as
a SETTINGS clause on the statement, as the server applies them to the
request); every parameter is recorded, so a test can check what was asked.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.threaded_server import ThreadedAiohttpServer


class ClickHouseFault(StrEnum):
    OK = "ok"
    #: HTTP 500 with a plain body and no ClickHouse code, as a proxy or a crashing
    #: handler answers (what the sink used to give up on)
    SERVER_ERROR = "server_error"
    #: INSERTs only: HTTP 500, code 252, ClickHouse's TOO_MANY_PARTS text
    TOO_MANY_PARTS = "too_many_parts"


TOO_MANY_PARTS_BODY = (
    "Code: 252. DB::Exception: Too many parts (3001 with average size of 1.2 KiB) in "
    "table '{table}'. Merges are processing significantly slower than inserts. "
    "(TOO_MANY_PARTS) (version 24.8.4.13 (official build))\n"
)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+([\w.`]+)", re.IGNORECASE)
_CODE = re.compile(r"Code:\s*(\d+)")
#: URL settings the fake applies (numbers only, so they go into SQL as they are)
_APPLIED_SETTINGS = ("readonly", "max_execution_time")
# exceptionCodeToHTTPStatus.cpp, the codes the project meets; everything else is 500
_STATUS_OF_CODE = {
    6: 400, 27: 400, 53: 400, 62: 400, 117: 400, 164: 500, 47: 404, 60: 404, 81: 404,
}  # fmt: skip


class FakeClickHouseServer(ThreadedAiohttpServer):
    """ClickHouse's HTTP interface at `url`, its data in a chDB directory."""

    def __init__(self, chdb_path: str | Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        import chdb.session  # here: importing tests.fakes must not load chDB

        self._session: Any = chdb.session.Session(str(chdb_path))
        self._lock = threading.Lock()
        self._inserted: dict[str, list[dict[str, Any]]] = {}
        self.refused_inserts: Counter[str] = Counter()  # INSERTs answered with a fault, by fault

    @property
    def url(self) -> str:
        return self.root_url

    # ------------------------------------------------------------ control --

    def refuse_connections(self) -> None:
        """Stop listening: clients get ECONNREFUSED until `accept_connections`."""
        self.stop()

    def accept_connections(self) -> None:
        self.start()  # the same port: `start` reuses the one bound first

    def inserted_rows(self, table: str) -> list[dict[str, Any]]:
        """Rows inserted into `<any database>.<table>` and accepted, in arrival order."""
        with self._lock:
            return list(self._inserted.get(table, []))

    def close(self) -> None:
        """Stop serving and close the chDB session (one data path per process)."""
        self.stop()
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ------------------------------------------------------------- server --

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/ping", self.ping)
        app.router.add_route("*", "/", self.statement)
        return app

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n")

    async def statement(self, request: web.Request) -> web.Response:
        if request.headers.get("Content-Encoding", "identity") != "identity":
            return self._error(415, 0, "the fake server reads uncompressed bodies only")
        body = (await request.read()).decode("utf-8", errors="replace")
        params = dict(request.query)
        sql = params.get("query", "")
        sql = f"{sql}\n{body}" if sql and body else (sql or body)
        insert = _INSERT.match(sql)
        fault_name, _ = self.faults.take()
        fault = ClickHouseFault(fault_name)
        self.record(request, {"sql": sql.split("\n", 1)[0][:200], "params": params}, fault.value)
        if fault is ClickHouseFault.SERVER_ERROR:
            if insert:
                self.refused_inserts[fault.value] += 1
            return web.Response(status=500, text="Internal Server Error\n")
        if fault is ClickHouseFault.TOO_MANY_PARTS and insert:
            self.refused_inserts[fault.value] += 1
            return self._error(500, 252, TOO_MANY_PARTS_BODY.format(table=insert.group(1)))
        applied = [f"{name} = {params[name]}" for name in _APPLIED_SETTINGS if name in params]
        if applied and not insert:
            sql = f"{sql.rstrip()} SETTINGS {', '.join(applied)}"
        try:
            output = self._execute(sql)
        except Exception as exc:  # chDB raises RuntimeError with ClickHouse's text
            text = str(exc)
            match = _CODE.search(text)
            code = int(match.group(1)) if match else 1001
            return self._error(_STATUS_OF_CODE.get(code, 500), code, text)
        if insert:
            self._record_rows(insert.group(1), sql)
        return web.Response(
            body=output, headers={"X-ClickHouse-Query-Id": params.get("query_id", "")}
        )

    def _execute(self, sql: str) -> bytes:
        with self._lock:
            if self._session is None:
                raise RuntimeError("Code: 210. DB::Exception: the fake server is closed")
            result = self._session.query(sql, "TabSeparated")
        data: bytes = result.bytes()
        return data

    def _record_rows(self, target: str, sql: str) -> None:
        table = target.replace("`", "").split(".")[-1]
        _, _, data = sql.partition("\n")
        rows = [json.loads(line) for line in data.splitlines() if line.strip()]
        with self._lock:
            self._inserted.setdefault(table, []).extend(rows)

    @staticmethod
    def _error(status: int, code: int, text: str) -> web.Response:
        return web.Response(
            status=status,
            text=text if text.endswith("\n") else text + "\n",
            headers={"X-ClickHouse-Exception-Code": str(code)},
        )


__all__ = ["ClickHouseFault", "FakeClickHouseServer"]
