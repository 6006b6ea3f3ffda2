"""The worker's /sql/ page: read-only SQL on the chDB directory the worker holds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from schemas.errors import ConfigError
from streams.config import parse_config
from streams.ops.broker import EmbeddedBroker
from streams.web.sql import check_sql_access
from tests.conftest import harness_for, pipeline_config, scripted_tier

TOKEN_ENV = "FALLBACK_TEST_SQL_TOKEN"
TOKEN = "s3cret-for-the-test"
TIERS = [{"name": "primary", "adapter": {"kind": "digits", "model": "logistic"}}]


def test_an_sql_page_bound_beyond_loopback_needs_a_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exposed = {"worker": {"web_host": "0.0.0.0"}, "tiers": TIERS}
    check_sql_access(parse_config(exposed))  # off: nothing to check
    enabled = {**exposed, "analytics": {"sql": {"enabled": True}}}
    with pytest.raises(ConfigError, match=r"analytics\.sql\.token_env"):
        check_sql_access(parse_config(enabled))
    check_sql_access(parse_config({**enabled, "worker": {}}))  # loopback: fine
    with_token = {**exposed, "analytics": {"sql": {"enabled": True, "token_env": TOKEN_ENV}}}
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        check_sql_access(parse_config(with_token))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    check_sql_access(parse_config(with_token))


def fallback_sql(*args: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("FALLBACK_SQL_TOKEN", None)
    if token is not None:
        env["FALLBACK_SQL_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "streams.ops.cli", "sql", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


async def test_select_through_the_worker_and_what_is_refused(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the worker process inherits it
    config = pipeline_config(
        broker,
        tmp_path,
        [scripted_tier("primary"), scripted_tier("backup")],
        analytics={"sql": {"enabled": True, "token_env": TOKEN_ENV}},
    )
    async with harness_for(config, tmp_path) as harness:
        worker = harness.worker
        for script in ({}, {"primary": "error"}, {}):
            await harness.ask(script)
        deadline = time.monotonic() + 30
        while worker.get("/stats/")["sunk_responses"] < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        url = f"{worker.url}/sql/"
        select = {
            "sql": "SELECT status, count() AS n FROM model_fallback.responses GROUP BY status"
        }
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(timeout=30) as client:
            assert (await client.post(url, json=select)).status_code == 401
            wrong = {"Authorization": "Bearer guess"}
            assert (await client.post(url, json=select, headers=wrong)).status_code == 401
            answer = await client.post(url, json=select, headers=auth)
            assert answer.status_code == 200, answer.text
            assert answer.json()["columns"] == ["status", "n"]
            assert answer.json()["rows"] == [["served", 3]]
            write = {
                "sql": "INSERT INTO model_fallback.responses SELECT * FROM model_fallback.responses"
            }
            refused = await client.post(url, json=write, headers=auth)
            assert refused.status_code == 400 and refused.json()["refused"]
            again = await client.post(url, json=select, headers=auth)
            assert again.json()["rows"] == [["served", 3]]  # nothing was written
            report = (await client.get(f"{worker.url}/report/", params={"tier": "backup"})).json()
            assert [t["tier"] for t in report["tiers"]] == ["backup"]
            assert report["outcomes"]["requests"] == 1  # the one that fell back

        cli = await asyncio.to_thread(
            fallback_sql, select["sql"], "--url", worker.url, "--csv", token=TOKEN
        )
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.splitlines() == ["status,n", "served,3"]
        no_token = await asyncio.to_thread(
            fallback_sql, select["sql"], "--url", worker.url, token=None
        )
        assert no_token.returncode == 1 and "401" in no_token.stderr
        ddl = await asyncio.to_thread(
            fallback_sql, "DROP TABLE model_fallback.responses", "--url", worker.url, token=TOKEN
        )
        assert ddl.returncode == 2 and "only SELECT" in ddl.stderr
