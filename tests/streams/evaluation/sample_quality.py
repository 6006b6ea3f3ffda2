"""Quality callables for the tests (`tests.streams.evaluation.sample_quality:<name>`)."""

from __future__ import annotations

from typing import Any


def grounded_in_prompt(output: Any, request_input: dict[str, Any]) -> tuple[float, list[str]]:
    """A toy hallucination detector: the share of answer words found in the prompt."""
    answer_words = set(str(output).lower().split())
    prompt_words = set(str(request_input.get("prompt", "")).lower().split())
    if not answer_words:
        return 0.0, ["empty answer"]
    unsupported = sorted(answer_words - prompt_words)
    score = 1 - len(unsupported) / len(answer_words)
    return score, [f"not in the prompt: {', '.join(unsupported)}"] if unsupported else []


def constant_score(output: Any, request_input: dict[str, Any]) -> float:
    return 0.25


def broken_detector(output: Any, request_input: dict[str, Any]) -> float:
    raise KeyError("secret text of the answer")


def wrong_return_type(output: Any, request_input: dict[str, Any]) -> str:
    return "great"
