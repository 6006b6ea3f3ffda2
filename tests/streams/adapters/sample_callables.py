"""Functions the Python-callable adapter tests name in their configs (`module:function`)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from streams.adapters.base import Generation
from streams.adapters.errors import RateLimited

NOT_CALLABLE = 42


def echo(model_input: dict[str, Any], params: dict[str, Any], **options: Any) -> dict[str, Any]:
    """A plain JSON value: it becomes the output as it is."""
    return {"input": model_input, "params": params, "options": options}


def answer_in_envelope(model_input: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    return {
        "output": {"text": model_input["prompt"].upper()},
        "confidence": 0.75,
        "tokens_in": 3,
        "tokens_out": 5,
        "model": "shouty-1",
    }


def answer_as_generation(model_input: dict[str, Any], params: dict[str, Any]) -> Generation:
    return Generation(output="done", model="generation-model", confidence=0.5, tokens_out=1)


def plain_string(model_input: dict[str, Any], params: dict[str, Any]) -> str:
    return "just text"


def current_thread_name(model_input: dict[str, Any], params: dict[str, Any]) -> str:
    return threading.current_thread().name


def blocking_sleep(model_input: dict[str, Any], params: dict[str, Any], *, sleep_s: float) -> str:
    time.sleep(sleep_s)
    return "slept"


async def async_answer(
    model_input: dict[str, Any], params: dict[str, Any], *, suffix: str = ""
) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"output": model_input["prompt"] + suffix, "confidence": 1}


class AsyncCallableObject:
    async def __call__(self, model_input: dict[str, Any], params: dict[str, Any]) -> str:
        await asyncio.sleep(0)
        return "from object"


async_object = AsyncCallableObject()


def raises_value_error(model_input: dict[str, Any], params: dict[str, Any]) -> None:
    raise ValueError("weights file missing")


async def raises_rate_limited(model_input: dict[str, Any], params: dict[str, Any]) -> None:
    raise RateLimited("slow down", retry_after_s=2.0)


def envelope_with_typo(model_input: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    return {"output": "x", "confidance": 0.9}


def confidence_out_of_range(model_input: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    return {"output": "x", "confidence": 1.5}


def not_json(model_input: dict[str, Any], params: dict[str, Any]) -> object:
    return {"when": object()}


#: calls `counted_sleep` has begun, for tests that count what reached the "model"
counted_calls = 0
_counted_lock = threading.Lock()


def counted_sleep(model_input: dict[str, Any], params: dict[str, Any], *, sleep_s: float) -> str:
    """A blocking model that counts the calls it received."""
    global counted_calls
    with _counted_lock:
        counted_calls += 1
    time.sleep(sleep_s)
    return "slept"
