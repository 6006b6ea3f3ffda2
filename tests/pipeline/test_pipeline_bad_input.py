"""Bad input never stops an agent: it is dead-lettered with its reason."""

from __future__ import annotations

import base64
import json

import pytest

from tests.pipeline.harness import PipelineHarness

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_malformed_and_wrong_schema_requests_are_dead_lettered(
    shared_pipeline: PipelineHarness,
) -> None:
    await shared_pipeline.send_raw(b"{this is not json", key=b"junk")
    await shared_pipeline.send_raw(
        json.dumps({"request_id": "bad-schema-1", "input": "should be an object"}).encode(),
        key=b"bad-schema-1",
    )
    await shared_pipeline.send_raw(json.dumps({"input": {}}).encode())
    letters = await shared_pipeline.dead_letters(until=3)
    by_value = {base64.b64decode(letter["value_b64"]): letter for letter in letters}

    junk = by_value[b"{this is not json"]
    assert "not valid UTF-8 JSON" in junk["reason"]
    assert junk["stage"] == "router" and junk["request_id"] is None
    assert junk["source_topic"].endswith("requests") and junk["offset"] >= 0
    assert base64.b64decode(junk["key_b64"]) == b"junk"

    wrong = next(v for k, v in by_value.items() if b"bad-schema-1" in k)
    assert "input: Input should be a valid dictionary" in wrong["reason"]
    assert wrong["request_id"] == "bad-schema-1"

    anonymous = by_value[b'{"input": {}}']
    assert "request_id: Field required" in anonymous["reason"]

    # The caller whose request_id could be read is told, so nobody waits forever.
    invalid = shared_pipeline.responses.get("bad-schema-1")
    if invalid is None:
        waiter = await shared_pipeline.send(shared_pipeline.new_request(request_id="probe-x"))
        await waiter
        invalid = shared_pipeline.responses["bad-schema-1"]
    assert invalid.status == "invalid"
    assert invalid.message is not None and "valid dictionary" in invalid.message

    # ...and the worker keeps serving.
    response = await shared_pipeline.ask()
    assert response.status == "served"


async def test_undecodable_internal_event_is_dead_lettered(
    shared_pipeline: PipelineHarness,
) -> None:
    topics = shared_pipeline.client.topics
    await shared_pipeline.client.producer.send_and_wait(
        topics.tier("backup"), b"\x00garbage-not-avro", key=b"poison"
    )
    letters = await shared_pipeline.dead_letters(until=4)
    poison = [
        letter
        for letter in letters
        if base64.b64decode(letter["value_b64"]) == b"\x00garbage-not-avro"
    ]
    assert len(poison) == 1
    assert poison[0]["stage"] == "tier.backup"
    assert poison[0]["source_topic"] == topics.tier("backup")
    assert "not a valid Avro RoutedRequest" in poison[0]["reason"]
    assert (await shared_pipeline.ask({"primary": "error"})).served_by == "backup"
