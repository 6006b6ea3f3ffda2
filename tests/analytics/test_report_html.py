"""`fallback report --html`: the page opens offline in a real headless Chromium and
every chart draws the sample workload's data.

Chromium runs with name resolution switched off (`--host-resolver-rules`), so a
chart that needed the network would stay blank.  The rendered DOM is read
back (`--dump-dom`) and each chart's plotly SVG traces are counted; one
screenshot is saved under the test's tmp dir and its path printed.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from analytics.backend import ChdbBackend
from analytics.report import build_report
from analytics.report_html import CHARTS, build_figures, build_html, write_html
from analytics.series import build_series
from streams.ops.cli import cli
from tests.analytics.sample_events import WINDOW_START
from tests.analytics.test_queries import load_sample

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no name resolves
    "--virtual-time-budget=15000",  # let plotly finish drawing before the dump
    "--hide-scrollbars",
    "--window-size=1280,2400",
]
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (.ci/run apt-installs it)"
)
_profiles = itertools.count()


def run_chromium(tmp_path: Path, *args: str) -> str:
    """Chromium on a fresh profile; its stdout."""
    assert CHROMIUM is not None
    profile = tmp_path / f"chromium-profile-{next(_profiles)}"
    result = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


# ------------------------------------------------------ DOM inspection ----

_VOID = {"meta", "link", "br", "img", "input", "hr", "area", "base", "col", "source", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()

    def walk(self) -> list[Node]:
        found = [self]
        for child in self.children:
            found += child.walk()
        return found


class DomTree(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.root = Node("#document", {})
        self._stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {name: value or "" for name, value in attrs})
        self._stack[-1].children.append(node)
        if tag not in _VOID:
            self._stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._stack[-1].children.append(Node(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._stack) - 1, 0, -1):
            if self._stack[depth].tag == tag:
                del self._stack[depth:]
                return


def drawn_traces(dom: Node, chart_id: str) -> int:
    """Plotly traces of one chart that drew something: a line through two or
    more points, a marker, or a bar."""
    charts = [node for node in dom.walk() if node.attrs.get("id") == chart_id]
    assert charts, f"{chart_id} is not in the rendered page"
    drawn = 0
    for trace in (node for node in charts[0].walk() if "trace" in node.classes):
        paths = [node for node in trace.walk() if node.tag == "path" and node.attrs.get("d")]
        lines = [p for p in paths if "js-line" in p.classes and "L" in p.attrs["d"]]
        marks = [p for p in paths if "point" in p.classes]
        bars = [
            path
            for point in trace.walk()
            if "point" in point.classes
            for path in point.children
            if path.tag == "path" and path.attrs.get("d", "M0,0Z") != "M0,0Z"
        ]
        drawn += bool(lines or marks or bars)
    return drawn


def rendered_dom(tmp_path: Path, page: Path) -> Node:
    tree = DomTree()
    tree.feed(run_chromium(tmp_path, "--dump-dom", page.as_uri()))
    return tree.root


# --------------------------------------------------------------- tests ----


@pytest.fixture
def loaded(backend: ChdbBackend) -> ChdbBackend:
    load_sample(backend)
    return backend


def test_page_is_self_contained(loaded: ChdbBackend) -> None:
    page = build_html(build_series(loaded, WINDOW_START), build_report(loaded, WINDOW_START))
    assert "<script src" not in page and "<link" not in page  # nothing fetched
    assert page.count("Plotly.newPlot(") == len(CHARTS)
    for chart_id in CHARTS:
        assert f'id="{chart_id}"' in page
    assert "spend with primary only" in page and "$0.0200" in page


@needs_chromium
def test_every_chart_renders_with_data_offline(loaded: ChdbBackend, tmp_path: Path) -> None:
    series = build_series(loaded, WINDOW_START)
    report = build_report(loaded, WINDOW_START)
    page = write_html(tmp_path / "report.html", series, report)
    expected = {
        chart_id: len(figure.data) for chart_id, figure in build_figures(series, report).items()
    }
    # Hand-counted: 3 tiers; 3 end-to-end quantiles + 3 tiers' call p95; spend and
    # rejected spend; 3 fallback types; 2 spend lines + 2 failure bars.
    assert expected == {
        "chart-fallback-rate": 3,
        "chart-latency": 6,
        "chart-cost": 2,
        "chart-fallback-types": 3,
        "chart-counterfactual": 4,
    }
    dom = rendered_dom(tmp_path, page)
    assert {chart_id: drawn_traces(dom, chart_id) for chart_id in CHARTS} == expected

    screenshot = tmp_path / "report.png"
    run_chromium(tmp_path, f"--screenshot={screenshot}", page.as_uri())
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot of the HTML report: {screenshot}")


@needs_chromium
def test_empty_window_says_so(loaded: ChdbBackend, tmp_path: Path) -> None:
    page = write_html(tmp_path / "empty.html", build_series(loaded, tenant="nobody"))
    dom = rendered_dom(tmp_path, page)
    assert {chart_id: drawn_traces(dom, chart_id) for chart_id in CHARTS} == dict.fromkeys(
        CHARTS, 0
    )
    notes = [
        node
        for node in dom.walk()
        if node.attrs.get("data-unformatted") == "no data in this window"
    ]
    assert len(notes) == len(CHARTS)


def test_cli_writes_the_page_from_the_store(loaded: ChdbBackend, tmp_path: Path) -> None:
    """`fallback report --config ... --html FILE` with no worker: it reads chDB itself."""
    loaded.close()  # one chDB session per process: the CLI opens its own
    config = tmp_path / "fallback.yaml"
    tier = {"name": "primary", "adapter": {"kind": "python", "callable": "math:fabs"}}
    analytics = {"chdb_path": loaded.path, "database": loaded.database}
    config.write_text(yaml.safe_dump({"analytics": analytics, "tiers": [tier]}))
    page = tmp_path / "out" / "report.html"
    args = ["report", "--config", str(config), "--html", str(page), "--tier", "backup"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "tier backup" in text and "spend with primary only" in text
    assert str(page.resolve()) in result.output.replace("\n", "")
