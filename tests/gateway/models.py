"""A tier for the gateway tests (`tests.gateway.models:echo`): answers with the
last user message, so that every concurrent call can check it got its own answer.

A prompt starting with `sleep:<ms> ` waits that long first; `fail` raises.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def echo(input: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    prompt = str(input["messages"][-1].get("content", ""))
    head, _, _ = prompt.partition(" ")
    if head.startswith("sleep:"):
        await asyncio.sleep(float(head.removeprefix("sleep:")) / 1000)
    if head == "fail":
        raise RuntimeError("echo told to fail")
    return {
        "output": {"content": f"echo: {prompt}", "role": "assistant"},
        "confidence": 0.99,
        "tokens_in": 3,
        "tokens_out": 4,
    }
