"""Calls waiting for their response, by request_id.

The reader hands every record of this replica's partitions to `deliver`; the
value is decoded only when someone waits for it.  What arrives for nobody is
counted, never raised:

- `late`: the caller already left (deadline passed, or the client hung up);
- `duplicates`: a second copy of a response already handed over (delivery is
  at-least-once);
- `unknown`: an id this replica is not waiting for and does not remember
  (another producer's request, or older than the memory).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from schemas.codec import decode_response
from schemas.errors import EventDecodeError
from schemas.events import Response

log = logging.getLogger(__name__)

#: ids remembered after their call ended, to tell late and duplicate copies apart
REMEMBERED_IDS = 100_000

Ended = Literal["answered", "left"]


@dataclass(frozen=True)
class Arrival:
    """A call's response and when it reached this gateway."""

    response: Response
    arrived_at: datetime

    @property
    def hop_ms(self) -> float:
        """From the pipeline's decision to this gateway: the responses topic's hop
        (one clock on one host; across hosts, clock skew is in it too)."""
        return (self.arrived_at - self.response.completed_at).total_seconds() * 1000


@dataclass
class WaiterCounts:
    delivered: int = 0
    late: int = 0
    duplicates: int = 0
    unknown: int = 0
    undecodable: int = 0


class ResponseWaiters:
    def __init__(self, response_format: str, remembered: int = REMEMBERED_IDS) -> None:
        self.response_format = response_format
        self.remembered = remembered
        self.waiting: dict[str, asyncio.Future[Arrival]] = {}
        self.ended: OrderedDict[str, Ended] = OrderedDict()
        self.counts = WaiterCounts()

    def expect(self, request_id: str) -> asyncio.Future[Arrival]:
        future: asyncio.Future[Arrival] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = future
        return future

    def leave(self, request_id: str) -> None:
        """The caller stopped waiting (deadline, hang-up): a later response is late."""
        future = self.waiting.pop(request_id, None)
        if future is not None:
            if not future.done():
                future.cancel()
            self._end(request_id, "left")

    def deliver(self, key: bytes | None, value: bytes) -> None:
        if key is None:
            self.counts.unknown += 1
            return
        request_id = key.decode(errors="replace")
        future = self.waiting.get(request_id)
        if future is None:
            self._unclaimed(request_id)
            return
        try:
            response = decode_response(value, self.response_format)
        except EventDecodeError as exc:
            # The call stays waiting (a good copy may follow) until its deadline.
            self.counts.undecodable += 1
            log.warning("undecodable response for %s: %s", request_id, exc)
            return
        del self.waiting[request_id]
        self._end(request_id, "answered")
        self.counts.delivered += 1
        if not future.done():
            future.set_result(Arrival(response, datetime.now(UTC)))

    def _unclaimed(self, request_id: str) -> None:
        ended = self.ended.get(request_id)
        if ended == "left":
            self.counts.late += 1
            self.ended[request_id] = "answered"
        elif ended == "answered":
            self.counts.duplicates += 1
        else:
            self.counts.unknown += 1

    def _end(self, request_id: str, how: Ended) -> None:
        self.ended[request_id] = how
        self.ended.move_to_end(request_id)
        while len(self.ended) > self.remembered:
            self.ended.popitem(last=False)
