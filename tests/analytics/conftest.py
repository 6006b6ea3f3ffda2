from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics.backend import ChdbBackend
from analytics.migrate import apply_migrations


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[ChdbBackend]:
    """A migrated chDB in this test's temp dir, closed at teardown.

    chDB 4.4 holds one data path per process at a time, so every test closes
    its session before the next one opens another path.
    """
    chdb = ChdbBackend(str(tmp_path / "chdb"), "analytics_test")
    try:
        apply_migrations(chdb)
        yield chdb
    finally:
        chdb.close()
