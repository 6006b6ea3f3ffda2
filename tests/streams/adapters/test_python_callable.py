from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from schemas.errors import ConfigError
from streams.adapters.base import ModelCall
from streams.adapters.errors import MalformedResponse, ModelUnavailable, RateLimited
from streams.adapters.python_callable import PythonCallableAdapter
from streams.config import PythonCallableConfig

SAMPLES = "tests.streams.adapters.sample_callables"


def adapter_for(function: str, **config: Any) -> PythonCallableAdapter:
    return PythonCallableAdapter(
        PythonCallableConfig(kind="python", callable=f"{SAMPLES}:{function}", **config)
    )


def call(model_input: dict[str, Any] | None = None, **params: Any) -> ModelCall:
    return ModelCall(request_id="r1", input=model_input or {}, params=params, timeout_s=1.0)


async def test_plain_json_value_is_the_output_and_options_are_passed() -> None:
    adapter = adapter_for("echo", options={"temperature": 0.1})
    generation = await adapter.generate(call({"prompt": "hi"}, max_tokens=5))
    assert generation.output == {
        "input": {"prompt": "hi"},
        "params": {"max_tokens": 5},
        "options": {"temperature": 0.1},
    }
    assert generation.model == f"{SAMPLES}:echo"
    assert generation.confidence is None
    await adapter.aclose()


async def test_envelope_dict_fills_the_metrics() -> None:
    adapter = adapter_for("answer_in_envelope", model_name="ignored-when-envelope-names-one")
    generation = await adapter.generate(call({"prompt": "hi"}))
    assert generation.output == {"text": "HI"}
    assert generation.confidence == 0.75
    assert (generation.tokens_in, generation.tokens_out) == (3, 5)
    assert generation.model == "shouty-1"
    await adapter.aclose()


async def test_generation_is_used_as_returned() -> None:
    adapter = adapter_for("answer_as_generation")
    generation = await adapter.generate(call())
    assert (generation.output, generation.model, generation.confidence) == (
        "done",
        "generation-model",
        0.5,
    )
    await adapter.aclose()


async def test_model_name_from_config() -> None:
    adapter = adapter_for("plain_string", model_name="my-model")
    assert adapter.model_name == "my-model"
    generation = await adapter.generate(call())
    assert (generation.output, generation.model) == ("just text", "my-model")
    await adapter.aclose()


async def test_blocking_function_runs_in_the_pool_not_on_the_loop() -> None:
    adapter = adapter_for("current_thread_name")
    generation = await adapter.generate(call())
    assert generation.output.startswith("callable-")
    await adapter.aclose()


async def test_blocking_calls_run_concurrently_and_leave_the_loop_free() -> None:
    adapter = adapter_for("blocking_sleep", options={"sleep_s": 0.2})
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    results = await asyncio.gather(*(adapter.generate(call()) for _ in range(4)))
    elapsed = time.perf_counter() - started
    ticker.cancel()
    assert [g.output for g in results] == ["slept"] * 4
    assert elapsed < 0.6  # four 0.2 s calls side by side, not one after another
    assert ticks >= 10  # the event loop kept running meanwhile
    await adapter.aclose()


async def test_async_function_is_awaited() -> None:
    adapter = adapter_for("async_answer", options={"suffix": "!"})
    generation = await adapter.generate(call({"prompt": "hi"}))
    assert (generation.output, generation.confidence) == ("hi!", 1.0)
    await adapter.aclose()


async def test_async_callable_object_is_awaited() -> None:
    adapter = adapter_for("async_object")
    assert (await adapter.generate(call())).output == "from object"
    await adapter.aclose()


async def test_other_exceptions_become_model_unavailable() -> None:
    adapter = adapter_for("raises_value_error")
    with pytest.raises(ModelUnavailable, match="ValueError: weights file missing") as caught:
        await adapter.generate(call())
    assert caught.value.retryable
    assert isinstance(caught.value.__cause__, ValueError)
    await adapter.aclose()


async def test_model_errors_pass_through() -> None:
    adapter = adapter_for("raises_rate_limited")
    with pytest.raises(RateLimited) as caught:
        await adapter.generate(call())
    assert caught.value.retry_after_s == 2.0
    await adapter.aclose()


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("envelope_with_typo", "unknown keys \\['confidance'\\]"),
        ("confidence_out_of_range", "confidence must be a number in \\[0, 1\\]"),
        ("not_json", "not JSON"),
    ],
)
async def test_malformed_returns_are_refused(function: str, message: str) -> None:
    adapter = adapter_for(function)
    with pytest.raises(MalformedResponse, match=message):
        await adapter.generate(call())
    await adapter.aclose()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_package.models:predict", "cannot import module 'no_such_package.models'"),
        (f"{SAMPLES}:missing_function", "has no attribute 'missing_function'"),
        (f"{SAMPLES}:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not callable"),
    ],
)
def test_bad_callable_path_is_a_config_error(path: str, message: str) -> None:
    config = PythonCallableConfig(kind="python", callable=path)
    with pytest.raises(ConfigError, match=message):
        PythonCallableAdapter(config)
