"""Builds a tier's adapter from its config: the one place that knows every adapter kind.

    adapter.kind      adapter
    digits            digits.DigitsAdapter                (imported only when used)
    python            python_callable.PythonCallableAdapter
    openai_chat       openai_chat.OpenAIChatAdapter       (imported only when used)
    open_inference    open_inference.OpenInferenceAdapter (imported only when used)

A tier with `faults` gets its adapter wrapped in `faults.FaultInjectingAdapter`.
"""

from __future__ import annotations

from streams.adapters.base import ModelAdapter
from streams.adapters.faults import FaultInjectingAdapter
from streams.adapters.python_callable import PythonCallableAdapter
from streams.config import (
    DigitsModelConfig,
    OpenAIChatConfig,
    OpenInferenceConfig,
    PythonCallableConfig,
    TierConfig,
)

__all__ = ["MAX_CALLABLE_THREADS", "build_adapter"]

# Threads for a blocking Python callable: as many as the tier keeps in flight, capped
# because each thread costs memory and a blocking model rarely scales past this.
MAX_CALLABLE_THREADS = 64


def build_adapter(tier: TierConfig) -> ModelAdapter:
    config = tier.adapter
    adapter: ModelAdapter
    if isinstance(config, DigitsModelConfig):
        # Lazy: scikit-learn's import is most of a worker's start-up (2-7 s here).
        from streams.adapters.digits import DigitsAdapter

        adapter = DigitsAdapter(config)
    elif isinstance(config, PythonCallableConfig):
        threads = min(tier.max_in_flight, MAX_CALLABLE_THREADS)
        adapter = PythonCallableAdapter(config, max_workers=threads)
    elif isinstance(config, OpenAIChatConfig):
        # Lazy: the HTTP adapters' imports are only paid for by tiers that use them.
        from streams.adapters.openai_chat import OpenAIChatAdapter

        adapter = OpenAIChatAdapter(config, tier)
    elif isinstance(config, OpenInferenceConfig):
        from streams.adapters.open_inference import OpenInferenceAdapter

        adapter = OpenInferenceAdapter(config, tier)
    else:  # pragma: no cover - the config union is exhaustive
        raise TypeError(f"tier {tier.name}: unknown adapter config {type(config).__name__}")
    if tier.faults is not None:
        adapter = FaultInjectingAdapter(adapter, tier.faults)
    return adapter
