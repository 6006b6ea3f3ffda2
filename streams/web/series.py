"""The worker's `/report/series/` page: the series behind `fallback report --html`.

The worker owns the chDB directory, so the CLI asks it for the series (JSON,
`analytics.series.ReportSeries`) the way it asks `/report/` for the report.

    GET /report/series/?since_minutes=N&tenant=T&tier=NAME&step_s=S   (step_s: default automatic)

The primary tier of the counterfactual is the first unrestricted tier of the
worker's config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import faust
from faust.web import Request, Response, View

from analytics.series import build_series
from streams.stages.context import Pipeline


class BadQuery(ValueError):
    """A query parameter that is not what the page takes."""


@dataclass(frozen=True)
class SeriesQuery:
    since: datetime | None
    tenant: str | None
    tier: str | None
    step_s: int | None


def parse_series_query(query: Mapping[str, str]) -> SeriesQuery:
    minutes, step = query.get("since_minutes"), query.get("step_s")
    try:
        since = datetime.now(UTC) - timedelta(minutes=float(minutes)) if minutes else None
    except ValueError:
        raise BadQuery(f"since_minutes={minutes!r} is not a number") from None
    try:
        step_s = int(step) if step else None
    except ValueError:
        raise BadQuery(f"step_s={step!r} is not a whole number of seconds") from None
    if step_s is not None and step_s < 1:
        raise BadQuery(f"step_s={step!r} must be at least 1")
    return SeriesQuery(
        since=since,
        tenant=query.get("tenant") or None,
        tier=query.get("tier") or None,
        step_s=step_s,
    )


def register_series_page(app: faust.App, pipeline: Pipeline) -> None:
    primary = pipeline.config.primary_tier

    @app.page("/report/series/")
    async def report_series(web: View, request: Request) -> Response:
        if pipeline.sink is None:
            return web.json({"error": "analytics.enabled is false"}, status=404)
        try:
            query = parse_series_query(request.query)
        except BadQuery as exc:
            return web.json({"error": str(exc)}, status=400)
        await pipeline.sink.flush()
        series = await pipeline.sink.run(
            lambda backend: build_series(
                backend,
                since=query.since,
                tenant=query.tenant,
                tier=query.tier,
                primary_tier=primary,
                step_s=query.step_s,
            )
        )
        return web.json(series.model_dump(mode="json"))
