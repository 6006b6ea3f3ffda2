"""`fallback report --html FILE`: one self-contained HTML page of charts over time.

Plotly draws the charts; its JavaScript is inlined once in the page head, so
the file opens offline and can be mailed or attached to an incident.  Each
chart is a `<div id="chart-...">` (see `CHARTS`): fallback rate per tier,
latency quantiles, cost and cost on rejected attempts, rejections by fallback
type, and the counterfactual (the primary tier alone).  The headline figures
of the text report sit above them when a `Report` is given.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import datetime
from itertools import accumulate
from pathlib import Path

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from analytics.report import Report
from analytics.series import Point, ReportSeries, TierPoint
from schemas.events import FallbackType

CHARTS = {
    "chart-fallback-rate": "Fallback rate per tier",
    "chart-latency": "Latency quantiles",
    "chart-cost": "Cost, and cost on rejected attempts",
    "chart-fallback-types": "Rejections by fallback type",
    "chart-counterfactual": "Counterfactual: the primary tier alone",
}
# One colour per tier, fallback type and scenario on every chart.
_PALETTE = qualitative.Plotly
_TYPE_COLOURS = {kind.value: _PALETTE[index] for index, kind in enumerate(FallbackType)}
_WITH_FALLBACK, _PRIMARY_ONLY = _PALETTE[0], _PALETTE[1]
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_MARGIN = {"l": 60, "r": 30, "t": 50, "b": 40}
_LAYOUT = {
    "height": 380,
    "margin": _MARGIN,
    "legend": {"orientation": "h", "y": -0.15},
    "template": "plotly_white",
    "hovermode": "x unified",
}


def build_html(series: ReportSeries, report: Report | None = None) -> str:
    """The whole page as one string."""
    charts = "\n".join(
        figure.to_html(
            full_html=False, include_plotlyjs=False, div_id=chart_id, config=_PLOT_CONFIG
        )
        for chart_id, figure in build_figures(series, report).items()
    )
    title = "Model fallback report"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }}
h1 {{ font-size: 1.4em; margin-bottom: 4px; }}
.window {{ color: #555; margin-top: 0; }}
table.figures {{ border-collapse: collapse; margin: 12px 0 24px; }}
table.figures td {{ padding: 3px 14px 3px 0; }}
table.figures td.value {{ text-align: right; font-variant-numeric: tabular-nums; }}
</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<h1>{title}</h1>
<p class="window">{html.escape(_window(series))}</p>
{_figures_table(series, report)}
{charts}
</body>
</html>
"""


def build_figures(series: ReportSeries, report: Report | None = None) -> dict[str, go.Figure]:
    """Every chart by its div id (the keys of `CHARTS`); tiers in the report's order."""
    tier_order = [tier.tier for tier in report.tiers] if report else []
    return {
        "chart-fallback-rate": fallback_rate_figure(series, tier_order),
        "chart-latency": latency_figure(series, tier_order),
        "chart-cost": cost_figure(series),
        "chart-fallback-types": fallback_type_figure(series),
        "chart-counterfactual": counterfactual_figure(series),
    }


def write_html(path: Path, series: ReportSeries, report: Report | None = None) -> Path:
    """Write the page to `path` (parents created) and return its absolute path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_html(series, report), encoding="utf-8")
    return path.resolve()


# -------------------------------------------------------------- charts ----


def fallback_rate_figure(series: ReportSeries, tier_order: list[str]) -> go.Figure:
    figure = _figure(CHARTS["chart-fallback-rate"])
    for index, (tier, points) in enumerate(_by_tier(series.tiers, tier_order)):
        figure.add_trace(
            go.Scatter(
                x=_times(points),
                y=[p.fallback_rate for p in points],
                line={"color": _tier_colour(index)},
                customdata=[[p.fell_through, p.requests] for p in points],
                hovertemplate="%{y:.1%} (%{customdata[0]}/%{customdata[1]})",
                mode="lines+markers",
                name=tier,
            )
        )
    figure.update_yaxes(tickformat=".0%", rangemode="tozero", title="fell through / reached")
    return _or_empty(figure)


def latency_figure(series: ReportSeries, tier_order: list[str]) -> go.Figure:
    figure = _figure(CHARTS["chart-latency"])
    buckets = _times(series.latency)
    quantiles = (
        ("end-to-end p50", [p.p50_ms for p in series.latency], 1),
        ("end-to-end p95", [p.p95_ms for p in series.latency], 2),
        ("end-to-end p99", [p.p99_ms for p in series.latency], 3),
    )
    for name, values, width in quantiles if series.latency else ():
        figure.add_trace(
            go.Scatter(
                x=buckets,
                y=values,
                mode="lines+markers",
                line={"color": "#444", "width": width},
                name=name,
            )
        )
    for index, (tier, points) in enumerate(_by_tier(series.tiers, tier_order)):
        called = [p for p in points if p.calls]
        if called:
            figure.add_trace(
                go.Scatter(
                    x=_times(called),
                    y=[p.p95_ms for p in called],
                    mode="lines+markers",
                    line={"dash": "dot", "color": _tier_colour(index)},
                    name=f"{tier} call p95",
                )
            )
    figure.update_yaxes(title="ms", rangemode="tozero")
    return _or_empty(figure)


def cost_figure(series: ReportSeries) -> go.Figure:
    figure = _figure(CHARTS["chart-cost"])
    buckets = sorted({p.bucket for p in series.tiers})
    spent = dict.fromkeys(buckets, 0.0)
    rejected = dict.fromkeys(buckets, 0.0)
    for point in series.tiers:
        spent[point.bucket] += point.cost_usd
        rejected[point.bucket] += point.rejected_cost_usd
    if buckets:
        figure.add_trace(
            go.Scatter(
                x=_naive(buckets), y=list(spent.values()), mode="lines+markers", name="spend"
            )
        )
        figure.add_trace(
            go.Scatter(
                x=_naive(buckets),
                y=list(rejected.values()),
                mode="lines+markers",
                fill="tozeroy",
                name="spend on rejected attempts",
            )
        )
    figure.update_yaxes(title="USD per bucket", tickprefix="$", rangemode="tozero")
    return _or_empty(figure)


def fallback_type_figure(series: ReportSeries) -> go.Figure:
    figure = _figure(CHARTS["chart-fallback-types"])
    for fallback_type in sorted({p.fallback_type for p in series.fallback_types}):
        points = [p for p in series.fallback_types if p.fallback_type == fallback_type]
        figure.add_trace(
            go.Bar(
                x=_times(points),
                y=[p.rejections for p in points],
                marker_color=_TYPE_COLOURS.get(fallback_type),
                name=fallback_type,
            )
        )
    figure.update_layout(barmode="stack")
    figure.update_yaxes(title="rejections")
    return _or_empty(figure)


def counterfactual_figure(series: ReportSeries) -> go.Figure:
    primary = series.primary_tier or "primary"
    figure = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("cumulative spend", "requests not served"),
        horizontal_spacing=0.1,
    )
    figure.update_layout(title=CHARTS["chart-counterfactual"], **_LAYOUT)
    figure.update_layout(margin={**_MARGIN, "t": 80})
    points = series.counterfactual
    buckets = _times(points)
    if points:
        for name, values, colour in (
            ("spend with fallback", [p.cost_usd for p in points], _WITH_FALLBACK),
            (
                f"spend with {primary} only",
                [p.primary_only_cost_usd for p in points],
                _PRIMARY_ONLY,
            ),
        ):
            figure.add_trace(
                go.Scatter(
                    x=buckets,
                    y=list(accumulate(values)),
                    mode="lines+markers",
                    line={"color": colour},
                    name=name,
                ),
                row=1,
                col=1,
            )
        for name, counts, colour in (
            ("unavailable with fallback", [p.unavailable for p in points], _WITH_FALLBACK),
            (f"failed with {primary} only", [p.primary_only_failed for p in points], _PRIMARY_ONLY),
        ):
            figure.add_trace(
                go.Bar(x=buckets, y=counts, marker_color=colour, name=name), row=1, col=2
            )
    figure.update_yaxes(tickprefix="$", rangemode="tozero", row=1, col=1)
    figure.update_yaxes(title="requests per bucket", row=1, col=2)
    return _or_empty(figure)


# ------------------------------------------------------------- helpers ----


def _times(points: Iterable[Point]) -> list[datetime]:
    return _naive(point.bucket for point in points)


def _naive(moments: Iterable[datetime]) -> list[datetime]:
    """UTC without the offset: plotly.js reads dates as wall-clock times and
    does not parse `+00:00`."""
    return [moment.replace(tzinfo=None) for moment in moments]


def _tier_colour(index: int) -> str:
    return _PALETTE[index % len(_PALETTE)]


def _figure(title: str) -> go.Figure:
    figure = go.Figure()
    figure.update_layout(title=title, **_LAYOUT)
    return figure


def _or_empty(figure: go.Figure) -> go.Figure:
    """A chart with no trace says so instead of showing empty axes."""
    if not figure.data:
        figure.add_annotation(
            text="no data in this window",
            showarrow=False,
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
        )
    return figure


def _by_tier(
    points: Iterable[TierPoint], tier_order: list[str]
) -> list[tuple[str, list[TierPoint]]]:
    """Points grouped by tier, in ladder order when known, else by name."""
    grouped: dict[str, list[TierPoint]] = {}
    for point in points:
        grouped.setdefault(point.tier, []).append(point)
    rank = {tier: index for index, tier in enumerate(tier_order)}
    names = sorted(grouped, key=lambda tier: (rank.get(tier, len(rank)), tier))
    return [(tier, grouped[tier]) for tier in names]


def _window(series: ReportSeries) -> str:
    parts = [f"since {_time(series.since)} UTC" if series.since else "all time"]
    if series.tenant:
        parts.append(f"tenant {series.tenant}")
    if series.tier:
        parts.append(f"tier {series.tier}")
    parts.append(f"{series.step_s}s buckets")
    parts.append(f"generated {_time(series.generated_at)} UTC")
    return "; ".join(parts)


def _time(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def _figures_table(series: ReportSeries, report: Report | None) -> str:
    rows: list[tuple[str, str]] = []
    if report is not None:
        outcomes, cost, sla = report.outcomes, report.cost, report.sla
        rows += [
            ("requests", str(outcomes.requests)),
            ("served / unavailable / invalid",
             f"{outcomes.served} / {outcomes.unavailable} / {outcomes.invalid}"),
            ("total cost", _usd(cost.total_cost_usd)),
            ("cost per served request", _usd(cost.cost_per_served_request_usd)),
            ("cost on rejected attempts", _usd(cost.rejected_attempts_cost_usd)),
            ("SLA compliance", _percent(sla.compliance)),
        ]  # fmt: skip
    if series.counterfactual and series.primary_tier:
        points = series.counterfactual
        rows += [
            (f"spend with {series.primary_tier} only",
             _usd(sum(p.primary_only_cost_usd for p in points))),
            (f"failed with {series.primary_tier} only",
             str(sum(p.primary_only_failed for p in points))),
        ]  # fmt: skip
    if not rows:
        return ""
    cells = "\n".join(
        f'<tr><td>{html.escape(name)}</td><td class="value">{html.escape(value)}</td></tr>'
        for name, value in rows
    )
    return f'<table class="figures">\n{cells}\n</table>'


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"
