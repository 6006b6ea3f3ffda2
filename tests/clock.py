"""The one fake clock of the tests: monotonic seconds that move only when told."""

from __future__ import annotations


class FakeClock:
    """Call it for the time (seconds); `advance` moves it forward."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds
