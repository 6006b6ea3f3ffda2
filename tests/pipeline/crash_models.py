"""Models for the crash and stuck-consumer tests (imported by the worker as
`tests.pipeline.crash_models:<function>`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

ANSWER = {"content": "ok"}


async def hang_once(input: dict[str, Any], params: dict[str, Any], marker: str) -> dict[str, Any]:
    """A request with `"hang": true` never gets an answer from the first worker
    that calls it (a wedged handler); once `marker` exists every call answers."""
    if input.get("hang") and not Path(marker).exists():
        Path(marker).touch()
        await asyncio.sleep(3600)
    return {"output": ANSWER, "confidence": 0.99, "tokens_in": 1, "tokens_out": 1}


async def fixed_200ms(input: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Answers after 200 ms of (non-blocking) waiting; fails on the tiers in input["fail"]."""
    await asyncio.sleep(0.2)
    return {"output": ANSWER, "confidence": 0.99, "tokens_in": 1, "tokens_out": 1}
