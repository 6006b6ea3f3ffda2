"""Each waiting call gets its own response; what comes for nobody is counted."""

from __future__ import annotations

import asyncio

import pytest

from schemas.codec import encode_json
from schemas.events import Response
from streams.gateway.response_waiters import ResponseWaiters

pytestmark = pytest.mark.asyncio(loop_scope="session")


def record(request_id: str) -> tuple[bytes, bytes]:
    response = Response(request_id=request_id, tenant="t", status="served", output={"n": 1})
    return request_id.encode(), encode_json(response)


async def test_each_call_gets_its_own_response() -> None:
    waiters = ResponseWaiters("json")
    futures = {f"r{i}": waiters.expect(f"r{i}") for i in range(50)}
    for request_id in reversed(list(futures)):
        waiters.deliver(*record(request_id))
    assert all(f.result().response.request_id == rid for rid, f in futures.items())
    assert waiters.counts.delivered == 50 and not waiters.waiting


async def test_late_duplicate_and_unknown_responses_are_counted() -> None:
    waiters = ResponseWaiters("json")
    left = waiters.expect("left")
    waiters.leave("left")
    assert left.cancelled()
    waiters.deliver(*record("left"))
    assert waiters.counts.late == 1
    waiters.deliver(*record("left"))  # a second copy of a late one is a duplicate
    answered = waiters.expect("answered")
    waiters.deliver(*record("answered"))
    waiters.deliver(*record("answered"))
    waiters.deliver(*record("someone-else"))
    waiters.deliver(None, b"{}")
    assert answered.done()
    counts = waiters.counts
    assert (counts.delivered, counts.late, counts.duplicates, counts.unknown) == (1, 1, 2, 2)


async def test_an_undecodable_copy_leaves_the_call_waiting() -> None:
    waiters = ResponseWaiters("json")
    future = waiters.expect("r1")
    waiters.deliver(b"r1", b"not json")
    assert not future.done() and waiters.counts.undecodable == 1
    waiters.deliver(*record("r1"))
    arrival = await asyncio.wait_for(future, 1)
    assert arrival.response.request_id == "r1" and arrival.hop_ms >= 0


async def test_memory_of_ended_calls_is_bounded() -> None:
    waiters = ResponseWaiters("json", remembered=10)
    for i in range(100):
        waiters.expect(f"r{i}")
        waiters.leave(f"r{i}")
    assert len(waiters.ended) == 10
    waiters.deliver(*record("r0"))  # forgotten: unknown, not late
    waiters.deliver(*record("r99"))
    assert (waiters.counts.unknown, waiters.counts.late) == (1, 1)
