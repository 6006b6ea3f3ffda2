from __future__ import annotations

from pathlib import Path
from typing import Any

from streams.adapters.base import ModelCall
from streams.adapters.digits import DigitsAdapter
from streams.adapters.faults import FaultInjectingAdapter
from streams.adapters.open_inference import OpenInferenceAdapter
from streams.adapters.openai_chat import OpenAIChatAdapter
from streams.adapters.python_callable import PythonCallableAdapter
from streams.adapters.registry import build_adapter
from streams.config import TierConfig


def tier(adapter: dict[str, Any], **settings: Any) -> TierConfig:
    return TierConfig.model_validate({"name": "t1", "adapter": adapter, **settings})


async def test_digits(tmp_path: Path) -> None:
    adapter = build_adapter(
        tier({"kind": "digits", "model": "naive_bayes", "cache_dir": str(tmp_path)})
    )
    assert isinstance(adapter, DigitsAdapter)
    assert adapter.model_name == "digits-naive_bayes"
    await adapter.aclose()


async def test_python_callable_answers() -> None:
    adapter = build_adapter(
        tier({"kind": "python", "callable": "tests.streams.adapters.sample_callables:echo"})
    )
    assert isinstance(adapter, PythonCallableAdapter)
    call = ModelCall(request_id="r1", input={"x": 1}, params={}, timeout_s=1.0)
    assert (await adapter.generate(call)).output["input"] == {"x": 1}
    await adapter.aclose()


async def test_openai_chat() -> None:
    adapter = build_adapter(
        tier({"kind": "openai_chat", "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    )
    assert isinstance(adapter, OpenAIChatAdapter)
    assert adapter.model_name == "m"
    await adapter.aclose()


async def test_open_inference() -> None:
    adapter = build_adapter(
        tier({"kind": "open_inference", "base_url": "http://127.0.0.1:9", "model_name": "clf"})
    )
    assert isinstance(adapter, OpenInferenceAdapter)
    await adapter.aclose()


async def test_faults_wrap_the_adapter() -> None:
    adapter = build_adapter(
        tier(
            {"kind": "python", "callable": "tests.streams.adapters.sample_callables:echo"},
            faults={"error_rate": 1.0},
        )
    )
    assert isinstance(adapter, FaultInjectingAdapter)
    assert isinstance(adapter.inner, PythonCallableAdapter)
    assert adapter.model_name == "tests.streams.adapters.sample_callables:echo"
    await adapter.aclose()
