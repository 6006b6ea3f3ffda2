"""Models for the crash and stuck-consumer tests (imported by the worker as
`tests.pipeline.crash_models:<function>`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

ANSWER = {"content": "ok"}


async def hang_until(input: dict[str, Any], params: dict[str, Any], marker: str) -> dict[str, Any]:
    """A request with `"hang": true` gets no answer until the file `marker`
    exists (a wedged call, or one slower than the shutdown grace); every other
    request is answered at once."""
    while input.get("hang") and not Path(marker).exists():
        await asyncio.sleep(0.05)
    return {"output": ANSWER, "confidence": 0.99, "tokens_in": 1, "tokens_out": 1}


async def fixed_200ms(input: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Answers after 200 ms of (non-blocking) waiting."""
    await asyncio.sleep(0.2)
    return {"output": ANSWER, "confidence": 0.99, "tokens_in": 1, "tokens_out": 1}
