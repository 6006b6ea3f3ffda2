from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from analytics.rows import RowOptions, clickhouse_datetime, response_row, verdict_row
from tests.analytics.sample_events import sample_responses, sample_verdicts


def test_datetimes_are_utc_with_milliseconds() -> None:
    moment = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert clickhouse_datetime(moment) == "2026-03-01 10:00:00.123"
    assert clickhouse_datetime(datetime(2026, 3, 1, 10, 0)) == "2026-03-01 10:00:00.000"


def test_verdict_row_has_enums_as_strings_and_every_field() -> None:
    verdict = next(v for v in sample_verdicts() if v.trigger is not None)
    row = verdict_row(verdict)
    assert row["trigger"] == "timeout" and row["fallback_type"] == "reliability"
    assert set(row) == set(type(verdict).model_fields)
    json.dumps(row)  # JSONEachRow-ready


def test_response_row_leaves_the_answer_out_by_default() -> None:
    served = sample_responses()[0]
    row = response_row(served)
    assert row["output"] == ""
    assert row["output_expires_at"] == clickhouse_datetime(served.completed_at)[:19]
    assert row["status"] == "served" and row["served_by"] == "primary"  # metadata stays


def test_response_row_keeps_output_as_json_text_when_asked() -> None:
    served = sample_responses()[0]
    row = response_row(served, RowOptions(store_output=True, output_ttl_days=7))
    assert json.loads(row["output"]) == {"text": "answer to r1"}
    assert (
        row["output_expires_at"]
        == clickhouse_datetime(served.completed_at + timedelta(days=7))[:19]
    )
    assert row["attempts"] == 1 and row["tiers"] == ["primary"]
    json.dumps(row)
