"""Scripted models for end-to-end tests: each request says how each tier behaves.

A request's input may carry {"script": {"<tier>": "<behaviour>"}}; behaviours:
  ok | conf:<p> | error | sleep:<ms> | unsafe | empty | json:<text> | hallucinate
  | rate_limited:<retry-after s> | content_policy | overlap:<ms>
Anything not scripted answers "ok" with confidence 0.99.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams.adapters.errors import ContentPolicyViolation, RateLimited

#: per tier, calls of `overlap:<ms>` running right now in this worker
_running: dict[str, int] = {}


async def scripted(
    input: dict[str, Any], params: dict[str, Any], tier: str = "?"
) -> dict[str, Any]:
    behaviour = str(input.get("script", {}).get(tier, "ok"))
    kind, _, arg = behaviour.partition(":")
    confidence = 0.99
    content: Any = f"{tier} answer"
    if kind == "error":
        raise RuntimeError(f"{tier} is broken")
    if kind == "rate_limited":
        raise RateLimited("429 from provider", retry_after_s=float(arg or 0.05))
    if kind == "content_policy":
        raise ContentPolicyViolation("provider refused: content_policy_violation")
    if kind == "sleep":
        await asyncio.sleep(float(arg) / 1000)
    if kind == "overlap":
        # Sleep, and report the most calls of this tier seen running at once.
        _running[tier] = _running.get(tier, 0) + 1
        peak = _running[tier]
        try:
            await asyncio.sleep(float(arg) / 1000)
        finally:
            _running[tier] -= 1
        content = {"peak_running": peak}
    if kind == "conf":
        confidence = float(arg)
    if kind == "unsafe":
        content = "you are a fucking idiot and i hate you"
    if kind == "empty":
        content = ""
    if kind == "json":
        content = arg
    if kind == "hallucinate":
        content = "The Eiffel Tower was moved to Rome in 1999. [made-up]"
    output: dict[str, Any] = {"content": content, "tier": tier}
    if kind == "empty":
        output = {"content": ""}  # an empty chat answer, nothing else
    return {
        "output": output,
        "confidence": confidence,
        "tokens_in": 10,
        "tokens_out": 5,
    }


def fact_check(output: Any, request_input: dict[str, Any]) -> tuple[float, list[str]]:
    """A stand-in hallucination detector (the `callable` quality check's hook)."""
    content = str(output.get("content", "")) if isinstance(output, dict) else str(output)
    if "[made-up]" in content:
        return 0.1, ["claim not supported by any source"]
    return 1.0, []
