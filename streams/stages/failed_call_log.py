"""Failed model calls in the worker's log: one WARNING line per tier and trigger
per interval, with how many failed since the line before.

Hundreds of timeouts a second must not become hundreds of lines, and none
must go unseen.  A line names the tier, the trigger and the model, never the
error text: a provider's message may quote the prompt or the API key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas.events import Trigger

__all__ = ["FailedCallLog", "failed_calls"]

log = logging.getLogger(__name__)

#: at most one line per tier and trigger this often
INTERVAL_S = 10.0


@dataclass
class _Tally:
    logged_at_s: float
    unlogged: int = 0


@dataclass
class FailedCallLog:
    interval_s: float = INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    _tallies: dict[tuple[str, Trigger], _Tally] = field(default_factory=dict)

    def failed(self, tier: str, trigger: Trigger, model: str) -> None:
        """Count one failed call; log the count when the interval has passed.

        The first failure of a tier and trigger is logged at once; later ones are
        counted and logged with the next failure at least `interval_s` after the
        last line (a burst that stops before then is reported with the next one).
        """
        now_s = self.clock()
        key = (tier, trigger)
        tally = self._tallies.get(key)
        if tally is None:
            self._tallies[key] = _Tally(logged_at_s=now_s)
            log.warning("tier %s: a call to %s failed (%s)", tier, model, trigger)
            return
        tally.unlogged += 1
        elapsed_s = now_s - tally.logged_at_s
        if elapsed_s >= self.interval_s:
            calls = "1 call" if tally.unlogged == 1 else f"{tally.unlogged} calls"
            log.warning(
                "tier %s: %s to %s failed (%s) in %.0f s", tier, calls, model, trigger, elapsed_s
            )
            tally.logged_at_s, tally.unlogged = now_s, 0


#: the worker's one log of failed calls (the call stages of every tier share it)
failed_calls = FailedCallLog()
