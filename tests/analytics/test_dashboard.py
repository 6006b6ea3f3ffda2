"""The Grafana dashboard's ClickHouse panels run on chDB against the sample workload
and show the figures counted by hand from its raw rows (see `sample_events`).

Grafana's macros are expanded the way grafana-clickhouse-datasource expands them
(its pkg/macros/macros.go): `$__timeFilter(c)` becomes
`c >= toDateTime(<from s>) AND c <= toDateTime(<to s>)`, `$__timeInterval(c)`
becomes `toStartOfInterval(toDateTime(c), INTERVAL <interval s> second)`, and so
on.  Any other `$` left in a query fails the test, so a panel cannot depend on
something this test does not substitute.  Every ClickHouse panel must have an
expected figure here, and each figure is also checked against the query library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from analytics.backend import ChdbBackend
from analytics.migrate import apply_migrations
from analytics.queries import (
    cost_summary,
    end_to_end_latency,
    outcome_counts,
    rejections_by_fallback_type,
    rejections_by_trigger,
    sla_compliance,
    tier_fallback_rates,
)
from tests.analytics.sample_events import START, WINDOW_START
from tests.analytics.test_queries import load_sample

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "model-fallback.json"
CLICKHOUSE = "grafana-clickhouse-datasource"
PROMETHEUS_METRICS = {
    "fallback_circuit_state",
    "fallback_calls_in_flight",
    "fallback_consumer_lag_records",
}
# The panel's time range: WINDOW_START (r0, two hours before START, is outside) to an
# hour after START; one-minute intervals.
RANGE_FROM, RANGE_TO, INTERVAL_S = WINDOW_START, START + timedelta(hours=1), 60
NEXT = START + timedelta(minutes=1)


def expand_macros(sql: str, start: datetime, end: datetime, interval_s: int) -> str:
    """Grafana ClickHouse macros -> SQL, as the plugin's backend writes them."""
    seconds = {"from": int(start.timestamp()), "to": int(end.timestamp())}
    millis = {"from": int(start.timestamp() * 1000), "to": int(end.timestamp() * 1000)}

    def between(column: str, bound: Callable[[str], str]) -> str:
        return f"{column} >= {bound('from')} AND {column} <= {bound('to')}"

    def date_time(edge: str) -> str:
        return f"toDateTime({seconds[edge]})"

    def date_time64(edge: str) -> str:
        return f"fromUnixTimestamp64Milli({millis[edge]})"

    with_argument: dict[str, Callable[[str], str]] = {
        "timeFilter": lambda column: between(column, date_time),
        "timeFilter_ms": lambda column: between(column, date_time64),
        "timeInterval": lambda column: (
            f"toStartOfInterval(toDateTime({column}), INTERVAL {max(interval_s, 1)} second)"
        ),
        "timeInterval_ms": lambda column: (
            f"toStartOfInterval(toDateTime64({column}, 3), "
            f"INTERVAL {max(interval_s * 1000, 1)} millisecond)"
        ),
    }
    plain = {
        "fromTime": date_time("from"),
        "toTime": date_time("to"),
        "fromTime_ms": date_time64("from"),
        "toTime_ms": date_time64("to"),
        "interval_s": str(max(interval_s, 1)),
    }

    def macro(match: re.Match[str]) -> str:
        name, argument = match.group(1), match.group(2)
        if argument is not None and name in with_argument:
            return with_argument[name](argument.strip())
        if argument is None and name in plain:
            return plain[name]
        raise AssertionError(f"unsupported macro {match.group(0)!r}")

    expanded = re.sub(r"\$__(\w+)(?:\(([^()]*)\))?", macro, sql)
    assert "$" not in expanded, f"unexpanded variable in {expanded}"
    return expanded


def panels(kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every target on a datasource of type `kind`."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            datasource = target.get("datasource") or panel["datasource"]
            if datasource["type"] == kind:
                yield panel["title"], target


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChdbBackend]:
    """The sample on chDB, in the database the compose workers write to."""
    config = yaml.safe_load((ROOT / "examples" / "compose.yaml").read_text())
    backend = ChdbBackend(str(tmp_path / "chdb"), config["analytics"]["database"])
    try:
        apply_migrations(backend)
        load_sample(backend)
        yield backend
    finally:
        backend.close()


def run_panel(backend: ChdbBackend, target: dict[str, Any]) -> list[dict[str, Any]]:
    sql = expand_macros(target["rawSql"], RANGE_FROM, RANGE_TO, INTERVAL_S)
    rows = backend.query(sql)
    for row in rows:  # the time column as a datetime, for comparing with START
        if "time" in row:
            row["time"] = datetime.fromisoformat(row["time"]).replace(tzinfo=START.tzinfo)
    return rows


def by_time(rows: list[dict[str, Any]], label: str, value: str) -> dict[tuple[Any, Any], Any]:
    return {(row["time"], row[label]): row[value] for row in rows}


def check_fallback_rate(rows: list[dict[str, Any]], backend: ChdbBackend) -> None:
    assert by_time(rows, "tier", "fallback_rate") == {
        (START, "primary"): pytest.approx(3 / 4),  # r2, r3, r4 fell through; r1 served
        (START, "backup"): pytest.approx(1 / 3),  # r3 fell to local; r4 exhausted; r2 served
        (START, "local"): 0.0,
        (NEXT, "primary"): 1.0,  # r6 timeout
        (NEXT, "backup"): 0.0,
    }
    overall = {tier.tier: tier.fallback_rate for tier in tier_fallback_rates(backend, RANGE_FROM)}
    assert overall["primary"] == pytest.approx((3 + 1) / (4 + 1))


def check_triggers(rows: list[dict[str, Any]], backend: ChdbBackend) -> None:
    assert by_time(rows, "trigger", "rejections") == {
        (START, "timeout"): 1,  # r2
        (START, "low_confidence"): 1,  # r3 primary
        (START, "unsafe"): 1,  # r3 backup
        (START, "circuit_open"): 1,  # r4 primary
        (START, "over_budget"): 1,  # r4 backup
        (NEXT, "timeout"): 1,  # r6
    }
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["trigger"]] = totals.get(row["trigger"], 0) + row["rejections"]
    library = rejections_by_trigger(backend, RANGE_FROM)
    assert totals == {t.trigger: t.rejections for t in library}


def check_fallback_types(rows: list[dict[str, Any]], backend: ChdbBackend) -> None:
    assert by_time(rows, "fallback_type", "rejections") == {
        (START, "reliability"): 2,  # r2 timeout, r4 circuit_open
        (START, "quality"): 2,  # r3 low_confidence, unsafe
        (START, "cost"): 1,  # r4 over_budget
        (NEXT, "reliability"): 1,  # r6 timeout
    }
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["fallback_type"]] = totals.get(row["fallback_type"], 0) + row["rejections"]
    library = rejections_by_fallback_type(backend, RANGE_FROM)
    assert totals == {t.fallback_type: t.rejections for t in library}


def check_latency(rows: list[dict[str, Any]], backend: ChdbBackend) -> None:
    first, second = rows
    # START: r4 5, r1 110, r3 700, r2 1820 ms (r5 is invalid): linear interpolation
    assert first["time"] == START
    assert first["p50"] == pytest.approx((110 + 700) / 2)
    assert first["p95"] == pytest.approx(700 + 0.85 * (1820 - 700))
    assert first["p99"] == pytest.approx(700 + 0.97 * (1820 - 700))
    assert (second["time"], second["p50"], second["p99"]) == (NEXT, 1760.0, 1760.0)  # r6
    assert end_to_end_latency(backend, RANGE_FROM).count == 5


def check_sla_over_time(rows: list[dict[str, Any]], backend: ChdbBackend) -> None:
    # r1 and r3 met their deadline, r2 missed it; r6 (the next minute) had none.
    assert [(row["time"], row["compliance"]) for row in rows] == [(START, pytest.approx(2 / 3))]


def check_sla(rows: list[dict[str, Any]], backend: ChdbBackend) -> None:
    assert rows == [{"compliance": pytest.approx(2 / 3)}]
    assert rows[0]["compliance"] == pytest.approx(sla_compliance(backend, RANGE_FROM).compliance)


def check_cost_per_served(rows: list[dict[str, Any]], backend: ChdbBackend) -> None:
    # 0.01 + 0.002 + 0.012 + 0 + 0 + 0.002 spent over 4 served (r1, r2, r3, r6)
    assert rows == [{"cost_per_served_request": pytest.approx(0.026 / 4)}]
    library = cost_summary(backend, RANGE_FROM).cost_per_served_request_usd
    assert rows[0]["cost_per_served_request"] == pytest.approx(library)


def check_rejected_cost(rows: list[dict[str, Any]], backend: ChdbBackend) -> None:
    # r3: primary's low-confidence answer 0.01 and backup's unsafe one 0.002
    assert rows == [{"rejected_attempts_cost": pytest.approx(0.012)}]
    library = cost_summary(backend, RANGE_FROM).rejected_attempts_cost_usd
    assert rows[0]["rejected_attempts_cost"] == pytest.approx(library)


def check_requests(rows: list[dict[str, Any]], backend: ChdbBackend) -> None:
    assert rows == [{"requests": 6}]  # r1..r6; r0 is outside the range
    assert rows[0]["requests"] == outcome_counts(backend, RANGE_FROM).requests


def check_spend(rows: list[dict[str, Any]], backend: ChdbBackend) -> None:
    assert [(row["time"], row["spend"], row["spend_on_rejected"]) for row in rows] == [
        (START, pytest.approx(0.024), pytest.approx(0.012)),  # r1 0.01, r2 0.002, r3 0.012
        (NEXT, pytest.approx(0.002), 0.0),  # r6 backup
    ]


EXPECTED: dict[str, Callable[[list[dict[str, Any]], ChdbBackend], None]] = {
    "Fallback rate per tier": check_fallback_rate,
    "Rejections by trigger": check_triggers,
    "Rejections by fallback type": check_fallback_types,
    "End-to-end latency quantiles": check_latency,
    "SLA compliance": check_sla,
    "SLA compliance over time": check_sla_over_time,
    "Cost per served request": check_cost_per_served,
    "Cost of rejected attempts": check_rejected_cost,
    "Requests": check_requests,
    "Spend, and spend on rejected attempts": check_spend,
}


def test_every_clickhouse_panel_has_its_hand_counted_figures() -> None:
    assert sorted(title for title, _ in panels(CLICKHOUSE)) == sorted(EXPECTED)


@pytest.mark.parametrize("title", sorted(EXPECTED))
def test_clickhouse_panel(title: str, store: ChdbBackend) -> None:
    (target,) = [target for name, target in panels(CLICKHOUSE) if name == title]
    assert target["editorType"] == "sql"
    EXPECTED[title](run_panel(store, target), store)


def test_panels_see_only_their_time_range(store: ChdbBackend) -> None:
    """r0, two hours before START, is in a range that starts before it."""
    (target,) = [target for name, target in panels(CLICKHOUSE) if name == "Requests"]
    sql = expand_macros(target["rawSql"], START - timedelta(hours=3), RANGE_TO, INTERVAL_S)
    assert store.query(sql) == [{"requests": 7}]


def test_prometheus_panels_use_the_worker_metric_names() -> None:
    expressions = [target["expr"] for _, target in panels("prometheus")]
    used = {name for expr in expressions for name in re.findall(r"\bfallback_\w+", expr)}
    assert used == PROMETHEUS_METRICS
    titles = {title for title, _ in panels("prometheus")}
    assert titles == {"Circuit state", "Calls in flight", "Consumer lag"}
