"""A tier served by any Python function named `module:function` in the config.

The function is imported once, when the adapter is built, and called as

    fn(input: dict, params: dict, **options) -> Generation | dict | JSON value

`async def` functions are awaited on the event loop; plain functions run in a
bounded thread pool so a blocking model never stalls the worker.  What it may
return:

    Generation                       used as it is
    {"output": ..., "confidence": 0.9, "tokens_in": 3, "tokens_out": 5,
     "model": "my-model", "finish_reason": "stop"}
                                     an envelope; every key but `output` optional
    anything else JSON               the output itself (to return a dict that has
                                     an "output" key, wrap it: {"output": {...}})

What it raises: `ModelError` subclasses pass through (so a function can say
`RateLimited`, or `ModelRequestRejected` for input it cannot take: trigger
`bad_request`, which never counts against the tier's health); any other
exception becomes `ModelUnavailable` naming its type and message, which does.

The caller's timeout cancels the await, not a thread already running a blocking
function: such a call keeps its pool slot until it returns.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from schemas.errors import ConfigError
from streams.adapters.base import Generation, ModelCall
from streams.adapters.errors import MalformedResponse, ModelError, ModelUnavailable
from streams.config import PythonCallableConfig

__all__ = ["ENVELOPE_KEYS", "PythonCallableAdapter", "import_callable"]

ENVELOPE_KEYS = frozenset(
    {"output", "confidence", "tokens_in", "tokens_out", "model", "finish_reason"}
)


def import_callable(path: str) -> Callable[..., Any]:
    """`package.module:function` → the function, or `ConfigError` saying why not."""
    module_name, separator, attribute = path.partition(":")
    if not separator or not module_name or not attribute:
        raise ConfigError(f"adapter.callable {path!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module itself failing at import
        raise ConfigError(
            f"adapter.callable {path!r}: cannot import module {module_name!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        function = getattr(module, attribute)
    except AttributeError:
        raise ConfigError(
            f"adapter.callable {path!r}: module {module_name!r} has no attribute {attribute!r}"
        ) from None
    if not callable(function):
        raise ConfigError(
            f"adapter.callable {path!r}: {attribute!r} is a {type(function).__name__}, not callable"
        )
    return function


def _is_async(function: Callable[..., Any]) -> bool:
    # A callable object with `async def __call__` counts too.
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - looking for an async __call__
    )


class PythonCallableAdapter:
    def __init__(self, config: PythonCallableConfig, *, max_workers: int = 16) -> None:
        self.config = config
        self.model_name = config.model_name or config.callable
        self._function = import_callable(config.callable)
        self._is_async = _is_async(self._function)
        self._executor: ThreadPoolExecutor | None = None
        if not self._is_async:
            self._executor = ThreadPoolExecutor(
                max_workers=max_workers, thread_name_prefix=f"callable-{config.callable}"
            )
        # One slot per thread: a call waits for a slot (queue time, see `CallClock`)
        # rather than inside the executor, where its time limit would already run.
        self._threads = asyncio.Semaphore(max_workers)

    async def generate(self, call: ModelCall) -> Generation:
        try:
            result = await self._call(call)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelUnavailable(
                f"{self.config.callable} raised {type(exc).__name__}: {exc}"
            ) from exc
        return self._generation(result)

    async def _call(self, call: ModelCall) -> Any:
        options = self.config.options
        if self._executor is None:
            return await self._function(call.input, call.params, **options)
        loop = asyncio.get_running_loop()
        bound = functools.partial(self._function, call.input, call.params, **options)
        call.clock.queued()
        async with self._threads:
            call.clock.sent()
            result = await loop.run_in_executor(self._executor, bound)
        if inspect.isawaitable(result):  # a plain function that returned a coroutine
            result = await result
        return result

    def _generation(self, result: Any) -> Generation:
        if isinstance(result, Generation):
            generation = result
        elif isinstance(result, dict) and "output" in result:
            generation = self._from_envelope(result)
        else:
            generation = Generation(output=result, model=self.model_name)
        self._check_json(generation.output)
        return generation

    def _from_envelope(self, envelope: dict[str, Any]) -> Generation:
        # Unknown keys are refused rather than dropped: a misspelt "confidance" would
        # otherwise silently fall back to the tier's default confidence.
        unknown = sorted(set(envelope) - ENVELOPE_KEYS)
        if unknown:
            raise MalformedResponse(
                f"{self.config.callable} returned a dict with 'output' and unknown keys "
                f"{unknown}; allowed: {sorted(ENVELOPE_KEYS)} "
                "(to return such a dict as the output, wrap it in {'output': ...})"
            )
        confidence = envelope.get("confidence")
        if confidence is not None and not (
            isinstance(confidence, int | float)
            and not isinstance(confidence, bool)
            and 0.0 <= confidence <= 1.0
        ):
            raise MalformedResponse(
                f"{self.config.callable}: confidence must be a number in [0, 1], got {confidence!r}"
            )
        tokens: dict[str, int] = {}
        for key in ("tokens_in", "tokens_out"):
            value = envelope.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MalformedResponse(
                    f"{self.config.callable}: {key} must be a non-negative int, got {value!r}"
                )
            tokens[key] = value
        model = envelope.get("model", self.model_name)
        finish_reason = envelope.get("finish_reason")
        if not isinstance(model, str) or not (
            finish_reason is None or isinstance(finish_reason, str)
        ):
            raise MalformedResponse(
                f"{self.config.callable}: model and finish_reason must be strings, "
                f"got {model!r} and {finish_reason!r}"
            )
        return Generation(
            output=envelope["output"],
            model=model,
            confidence=None if confidence is None else float(confidence),
            tokens_in=tokens["tokens_in"],
            tokens_out=tokens["tokens_out"],
            finish_reason=finish_reason,
        )

    def _check_json(self, output: Any) -> None:
        """The output travels in JSON and Avro events: refuse what cannot."""
        try:
            json.dumps(output, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise MalformedResponse(
                f"{self.config.callable} returned an output that is not JSON: {exc}"
            ) from exc

    async def aclose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
