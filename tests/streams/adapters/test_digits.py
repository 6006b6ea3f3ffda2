from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.events import Trigger
from streams.adapters import digits
from streams.adapters.base import ModelCall
from streams.adapters.digits import (
    DigitsAdapter,
    DigitsModelKind,
    cache_file,
    digits_holdout,
    forget_loaded_classifiers,
    load_classifier,
)
from streams.adapters.errors import ModelRequestRejected
from streams.config import DigitsModelConfig


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session: each kind is trained once."""
    return tmp_path_factory.mktemp("digits-models")


def adapter_for(kind: DigitsModelKind, cache_dir: Path) -> DigitsAdapter:
    return DigitsAdapter(DigitsModelConfig(kind="digits", model=kind, cache_dir=str(cache_dir)))


@pytest.fixture
async def forest(model_cache_dir: Path) -> AsyncIterator[DigitsAdapter]:
    adapter = adapter_for("forest", model_cache_dir)
    yield adapter
    await adapter.aclose()


def call_with(features: Any) -> ModelCall:
    return ModelCall(request_id="r1", input={"features": features}, params={}, timeout_s=1.0)


def test_holdout_is_fixed_and_well_formed() -> None:
    features, labels = digits_holdout()
    assert len(features) == len(labels) == 540
    assert all(len(row) == 64 for row in features)
    assert set(labels) == set(range(10))
    assert digits_holdout() == (features, labels)


def test_trains_once_then_loads_from_the_disk_cache(
    model_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_classifier("naive_bayes", model_cache_dir)
    path = cache_file("naive_bayes", model_cache_dir)
    assert path.exists()
    assert "sklearn" in path.name
    written_at = path.stat().st_mtime_ns
    assert load_classifier("naive_bayes", model_cache_dir) is first  # memory

    def no_training(kind: str) -> None:
        raise AssertionError(f"retrained {kind}")

    forget_loaded_classifiers()
    monkeypatch.setattr(digits, "train_classifier", no_training)
    reloaded = load_classifier("naive_bayes", model_cache_dir)  # disk
    assert reloaded is not first
    assert path.stat().st_mtime_ns == written_at
    assert not list(model_cache_dir.glob("*.tmp"))  # the atomic write left no temporaries


def test_unreadable_cache_file_is_retrained_and_replaced(tmp_path: Path) -> None:
    path = cache_file("naive_bayes", tmp_path)
    path.write_bytes(b"half a pickle")
    classifier = load_classifier("naive_bayes", tmp_path)
    assert classifier.kind == "naive_bayes"
    assert path.stat().st_size > 1000
    forget_loaded_classifiers()
    assert load_classifier("naive_bayes", tmp_path).kind == "naive_bayes"


def test_fast_forest_scoring_matches_predict_proba(model_cache_dir: Path) -> None:
    classifier = load_classifier("forest", model_cache_dir)
    features = np.asarray(digits_holdout()[0])
    assert classifier.probabilities is not classifier.estimator.predict_proba
    np.testing.assert_allclose(
        classifier.probabilities(features), classifier.estimator.predict_proba(features)
    )


async def test_predicts_a_label_with_a_confidence(forest: DigitsAdapter) -> None:
    features, labels = digits_holdout()
    generation = await forest.generate(call_with(features[0]))
    assert generation.output == {"label": labels[0]}
    assert generation.model == "digits-forest"
    assert generation.confidence is not None
    assert 0.0 <= generation.confidence <= 1.0
    # Integers (as a JSON producer sends them) work as well as floats.
    integers = [int(value) for value in features[0]]
    assert (await forest.generate(call_with(integers))).output == {"label": labels[0]}


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (None, "needs 'features'"),
        ("0" * 64, "needs 'features'"),
        ([0.0] * 63, "exactly 64 features, got 63"),
        ([0.0] * 65, "exactly 64 features, got 65"),
        ([0.0] * 63 + ["1"], r"feature \[63\] is not a number"),
        ([True] + [0.0] * 63, r"feature \[0\] is not a number"),
        ([0.0] * 10 + [float("nan")] + [0.0] * 53, r"feature \[10\] is not finite"),
        ([float("inf")] + [0.0] * 63, r"feature \[0\] is not finite"),
    ],
)
async def test_bad_input_is_rejected(forest: DigitsAdapter, features: Any, message: str) -> None:
    with pytest.raises(ModelRequestRejected, match=message) as caught:
        await forest.generate(call_with(features))
    # The request's fault: never counted against the tier's health, never retried.
    assert caught.value.trigger is Trigger.BAD_REQUEST
    assert not caught.value.retryable


async def holdout_accuracy(adapter: DigitsAdapter) -> tuple[float, list[float], list[float]]:
    """Accuracy, per-call latencies (ms) and confidences over the whole holdout."""
    features, labels = digits_holdout()
    correct = 0
    latencies_ms: list[float] = []
    confidences: list[float] = []
    for row, label in zip(features, labels, strict=True):
        started = time.perf_counter()
        generation = await adapter.generate(call_with(row))
        latencies_ms.append((time.perf_counter() - started) * 1000)
        confidences.append(generation.confidence or 0.0)
        correct += generation.output["label"] == label
    return correct / len(labels), latencies_ms, confidences


async def test_primary_is_more_accurate_than_the_cheap_model(model_cache_dir: Path) -> None:
    accuracy: dict[str, float] = {}
    confidences: dict[str, list[float]] = {}
    kinds: tuple[DigitsModelKind, ...] = ("forest", "logistic", "naive_bayes")
    for kind in kinds:
        adapter = adapter_for(kind, model_cache_dir)
        await adapter.warm_up()
        accuracy[kind], latencies_ms, confidences[kind] = await holdout_accuracy(adapter)
        await adapter.aclose()
        assert statistics.median(latencies_ms) < 10, kind
    assert accuracy["forest"] >= 0.95
    assert accuracy["forest"] > accuracy["naive_bayes"] + 0.08
    assert accuracy["logistic"] > accuracy["naive_bayes"]
    # The demo needs `min_confidence` to bite: the forest is unsure of many images.
    below = sum(c < 0.8 for c in confidences["forest"]) / len(confidences["forest"])
    assert 0.2 < below < 0.8
