"""Python-callable tiers for the benchmarks (the worker imports them as `bench.models:...`)."""

from __future__ import annotations

import asyncio
from typing import Any

ANSWER = {"content": "ok"}


async def instant(input: dict[str, Any], params: dict[str, Any], tier: str = "?") -> dict[str, Any]:
    """Answers at once, confident; errors on the tiers listed in input["fail"]."""
    if tier in input.get("fail", ()):
        raise RuntimeError(f"{tier} told to fail")
    return {"output": ANSWER, "confidence": 0.99, "tokens_in": 1, "tokens_out": 1}


async def fixed_200ms(input: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Answers after exactly 200 ms of (non-blocking) waiting."""
    await asyncio.sleep(0.2)
    return {"output": ANSWER, "confidence": 0.99, "tokens_in": 1, "tokens_out": 1}
