"""`fallback report --config`: filters, and one line (not a traceback) when a worker holds chDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from analytics.backend import ChdbBackend
from analytics.migrate import apply_migrations
from tests.analytics.sample_events import load_sample


def write_config(tmp_path: Path, chdb_path: Path) -> Path:
    config = {
        "analytics": {"chdb_path": str(chdb_path), "database": "cli_report"},
        "worker": {"web_port": 6123},
        "tiers": [{"name": "primary", "adapter": {"kind": "digits", "model": "logistic"}}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fallback(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_report_from_the_store_with_filters(tmp_path: Path) -> None:
    chdb_path = tmp_path / "chdb"
    store = ChdbBackend(str(chdb_path), "cli_report")
    try:
        apply_migrations(store)
        load_sample(store)
    finally:
        store.close()
    config = write_config(tmp_path, chdb_path)
    result = fallback("report", "--config", str(config), "--tier", "local", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [t["tier"] for t in report["tiers"]] == ["local"]
    assert report["outcomes"]["requests"] == 1
    table = fallback("report", "--config", str(config), "--tenant", "acme")
    assert table.returncode == 0, table.stderr
    assert "tenant acme" in table.stdout and "exhausted" in table.stdout


def test_report_config_while_the_directory_is_held_says_use_url(tmp_path: Path) -> None:
    chdb_path = tmp_path / "chdb"
    holder = ChdbBackend(str(chdb_path), "cli_report")  # as a running worker would
    try:
        result = fallback("report", "--config", str(write_config(tmp_path, chdb_path)))
    finally:
        holder.close()
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert "--url http://127.0.0.1:6123" in lines[0]
