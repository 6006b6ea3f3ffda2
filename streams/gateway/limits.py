"""Per-key limits: requests per minute (a token bucket) and calls in flight.

Pure bookkeeping: the caller passes the clock in.  A refusal says how long
until a call would be let through (`Retry-After`).  Limits are per gateway
replica: with N replicas a key gets up to N times its limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from streams.gateway.keys import Caller

#: a refused in-flight slot frees when some call ends; we cannot know when
IN_FLIGHT_RETRY_AFTER_S = 1


@dataclass
class TokenBucket:
    """`per_minute` tokens refilled evenly; holds at most a minute's worth (the burst)."""

    per_minute: int
    tokens: float = -1.0
    updated_at: float = 0.0

    def take(self, now: float) -> float:
        """Take a token: 0.0 when taken, else the seconds until one is there."""
        if self.tokens < 0:  # first use: full
            self.tokens, self.updated_at = float(self.per_minute), now
        rate_per_s = self.per_minute / 60.0
        elapsed = max(now - self.updated_at, 0.0)
        self.tokens = min(float(self.per_minute), self.tokens + elapsed * rate_per_s)
        self.updated_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate_per_s


@dataclass(frozen=True)
class Refusal:
    """Why a call was refused, and the whole seconds to wait (`Retry-After`)."""

    message: str
    retry_after_s: int


@dataclass
class KeyLimits:
    """The limits of every key, by key name."""

    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)

    def admit(self, caller: Caller, now: float) -> Refusal | None:
        """Admit one call (then `release` it when it ends), or say why not."""
        held = self.in_flight.get(caller.key_name, 0)
        if caller.max_in_flight is not None and held >= caller.max_in_flight:
            return Refusal(
                f"Too many requests in flight for this key (limit {caller.max_in_flight}).",
                IN_FLIGHT_RETRY_AFTER_S,
            )
        if caller.requests_per_minute is not None:
            bucket = self.buckets.setdefault(
                caller.key_name, TokenBucket(caller.requests_per_minute)
            )
            wait_s = bucket.take(now)
            if wait_s > 0:
                return Refusal(
                    "Rate limit reached for this key: "
                    f"{caller.requests_per_minute} requests per minute.",
                    max(1, math.ceil(wait_s)),
                )
        self.in_flight[caller.key_name] = held + 1
        return None

    def release(self, caller: Caller) -> None:
        self.in_flight[caller.key_name] = max(self.in_flight.get(caller.key_name, 1) - 1, 0)
