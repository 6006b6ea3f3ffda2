"""Recently seen keys, so a redelivered event is not processed twice by one worker."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class RecentKeys:
    """Keys seen in the last `ttl_s` seconds, at most `max_keys` of them (oldest dropped)."""

    def __init__(self, ttl_s: float, max_keys: int = 1_000_000) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def seen_before(self, key: Hashable, now_s: float) -> bool:
        """True if `key` was seen within the TTL; records it either way."""
        self._expire(now_s)
        if key in self._seen:
            return True
        self._seen[key] = now_s
        if len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return False

    def _expire(self, now_s: float) -> None:
        horizon = now_s - self.ttl_s
        while self._seen:
            _, at = next(iter(self._seen.items()))
            if at >= horizon:
                break
            self._seen.popitem(last=False)
