"""Real scikit-learn classifiers on the digits data bundled with scikit-learn.

Three kinds, ranked for the demo tiers:

    forest        RandomForest, 100 trees   most accurate, the expensive primary
    logistic      regularised logistic regression        mid
    naive_bayes   Gaussian naive Bayes      cheapest, least accurate, over-confident

Each is trained at first use on a fixed split and cached on disk under
`cache_dir` (one joblib file per kind and scikit-learn version, written
atomically so concurrent workers never read a half-written file).  The
held-out part of the split is the demo workload (`digits_holdout`).

Input `{"features": [64 numbers]}`, output `{"label": int}`, confidence = the
probability of the predicted class.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import sklearn
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from streams.adapters.base import Generation, ModelCall
from streams.adapters.errors import ModelRequestRejected
from streams.config import DigitsModelConfig

__all__ = [
    "FEATURE_COUNT",
    "DigitsAdapter",
    "DigitsClassifier",
    "DigitsModelKind",
    "cache_file",
    "digits_holdout",
    "features_from_input",
    "forget_loaded_classifiers",
    "load_classifier",
    "train_classifier",
]

logger = logging.getLogger(__name__)

DigitsModelKind = Literal["forest", "logistic", "naive_bayes"]
FEATURE_COUNT = 64  # 8x8 grey levels 0..16
SPLIT_SEED = 7
HOLDOUT_FRACTION = 0.3
# Bump when a training recipe below changes, so stale cache files are ignored.
RECIPE_VERSION = 1

Probabilities = Callable[[np.ndarray], np.ndarray]


@cache
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    features, labels = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        features,
        labels,
        test_size=HOLDOUT_FRACTION,
        random_state=SPLIT_SEED,
        stratify=labels,
    )
    return train_x, test_x, train_y, test_y


def digits_holdout() -> tuple[list[list[float]], list[int]]:
    """The held-out test set (540 images): features and true labels, never trained on."""
    _, test_x, _, test_y = _split()
    return test_x.tolist(), [int(label) for label in test_y]


def train_classifier(kind: DigitsModelKind) -> Any:
    """Fit the scikit-learn estimator of `kind` on the training part of the split."""
    estimator: Any
    if kind == "forest":
        # n_jobs=1: joblib's dispatch costs milliseconds per single-sample call.
        estimator = RandomForestClassifier(n_estimators=100, n_jobs=1, random_state=SPLIT_SEED)
    elif kind == "logistic":
        # Strong regularisation (C=0.03) leaves it a little less accurate than the
        # forest and spreads its confidences, so `min_confidence` has work to do.
        estimator = make_pipeline(StandardScaler(), LogisticRegression(C=0.03, max_iter=2000))
    elif kind == "naive_bayes":
        estimator = GaussianNB()
    else:
        raise ValueError(f"unknown digits model {kind!r}")
    train_x, _, train_y, _ = _split()
    return estimator.fit(train_x, train_y)


@dataclass(frozen=True)
class DigitsClassifier:
    """A trained estimator plus the fastest correct way to score one image with it."""

    kind: DigitsModelKind
    estimator: Any
    probabilities: Probabilities

    def predict(self, features: np.ndarray) -> tuple[int, float]:
        """Label and its probability for one image (`features` shaped (1, 64))."""
        row = self.probabilities(features)[0]
        best = int(np.argmax(row))
        return int(self.estimator.classes_[best]), float(row[best])


def _forest_probabilities(forest: RandomForestClassifier) -> Probabilities:
    """Average the trees' leaf distributions directly.

    `RandomForestClassifier.predict_proba` re-validates the input and dispatches
    through joblib per call: ~15 ms for one image with 100 trees, against ~0.5 ms
    here.  `Tree.predict` returns each leaf's class fractions, which is what
    `predict_proba` averages; `_fastest_probabilities` checks that they agree.
    """
    trees = [tree.tree_ for tree in forest.estimators_]
    class_count = len(forest.classes_)

    def probabilities(rows: np.ndarray) -> np.ndarray:
        rows32 = np.ascontiguousarray(rows, dtype=np.float32)
        total = np.zeros((rows32.shape[0], class_count))
        for tree in trees:
            total += tree.predict(rows32)[:, :class_count]
        return total / len(trees)

    return probabilities


def _fastest_probabilities(kind: DigitsModelKind, estimator: Any) -> Probabilities:
    reference: Probabilities = estimator.predict_proba
    if kind != "forest":
        return reference
    fast = _forest_probabilities(estimator)
    sample = _split()[1][:32]
    try:
        if np.allclose(fast(sample), reference(sample)):
            return fast
    except Exception:  # a scikit-learn release changed Tree's internals
        logger.exception("fast forest scoring failed; using predict_proba")
    logger.warning("fast forest scoring disagrees with predict_proba; using predict_proba")
    return reference


# ------------------------------------------------------------ disk cache ----

_load_lock = threading.Lock()
_loaded: dict[tuple[DigitsModelKind, Path], DigitsClassifier] = {}


def cache_file(kind: DigitsModelKind, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / f"digits-{kind}-r{RECIPE_VERSION}-sklearn{sklearn.__version__}.joblib"


def _read_cached(kind: DigitsModelKind, path: Path) -> Any | None:
    try:
        payload = joblib.load(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # truncated or from another library version: retrain
        logger.warning("ignoring unreadable model cache %s: %s", path, exc)
        return None
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        logger.warning("ignoring model cache %s: it holds something else", path)
        return None
    return payload["estimator"]


def _write_atomically(kind: DigitsModelKind, estimator: Any, path: Path) -> None:
    """Write to a temporary file in the same directory, then rename over the target:
    readers see the old file or the whole new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            joblib.dump({"kind": kind, "estimator": estimator}, file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it owner-only; a cache is not a secret
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_classifier(kind: DigitsModelKind, cache_dir: str | Path) -> DigitsClassifier:
    """The classifier of `kind`: from this process's memory, else from the disk cache,
    else trained now and written to the cache.  Blocking; thread-safe."""
    key = (kind, Path(cache_dir).resolve())
    with _load_lock:
        if key in _loaded:
            return _loaded[key]
        path = cache_file(kind, cache_dir)
        estimator = _read_cached(kind, path)
        if estimator is None:
            logger.info("training digits %s model (cache %s)", kind, path)
            estimator = train_classifier(kind)
            try:
                _write_atomically(kind, estimator, path)
            except OSError as exc:  # a read-only cache dir must not stop the demo
                logger.warning("could not cache digits %s model at %s: %s", kind, path, exc)
        classifier = DigitsClassifier(kind, estimator, _fastest_probabilities(kind, estimator))
        _loaded[key] = classifier
        return classifier


def forget_loaded_classifiers() -> None:
    """Drop the in-memory copies (the disk cache stays); for tests."""
    with _load_lock:
        _loaded.clear()


# --------------------------------------------------------------- adapter ----


def features_from_input(model_input: dict[str, Any]) -> np.ndarray:
    """`{"features": [64 finite numbers]}` as a (1, 64) array, or `ModelRequestRejected`."""
    features = model_input.get("features")
    if not isinstance(features, list | tuple):
        raise ModelRequestRejected(
            f"digits input needs 'features': a list of {FEATURE_COUNT} numbers, "
            f"got {type(features).__name__}"
        )
    if len(features) != FEATURE_COUNT:
        raise ModelRequestRejected(
            f"digits input needs exactly {FEATURE_COUNT} features, got {len(features)}"
        )
    for index, value in enumerate(features):
        # bool is an int subclass, but True is not a grey level.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ModelRequestRejected(
                f"digits feature [{index}] is not a number: {type(value).__name__}"
            )
        if not math.isfinite(value):
            raise ModelRequestRejected(f"digits feature [{index}] is not finite: {value}")
    return np.asarray(features, dtype=np.float64).reshape(1, FEATURE_COUNT)


class DigitsAdapter:
    """A tier served by one of the digits classifiers, scored in a thread pool."""

    def __init__(self, config: DigitsModelConfig, *, max_workers: int = 2) -> None:
        self.config = config
        self.model_name = f"digits-{config.model}"
        # Scoring holds the GIL most of the time: more threads than cores buys nothing.
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=self.model_name
        )
        # One slot per thread: a call waits for a slot (queue time, see `CallClock`)
        # rather than inside the executor, where its time limit would already run.
        self._threads = asyncio.Semaphore(max_workers)

    def _classifier(self) -> DigitsClassifier:
        return load_classifier(self.config.model, self.config.cache_dir)

    def _predict(self, features: np.ndarray) -> tuple[int, float]:
        return self._classifier().predict(features)

    async def warm_up(self) -> None:
        """Load (or train) the model now rather than on the first request."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._classifier)

    async def generate(self, call: ModelCall) -> Generation:
        features = features_from_input(call.input)
        loop = asyncio.get_running_loop()
        call.clock.queued()
        async with self._threads:
            call.clock.sent()
            label, confidence = await loop.run_in_executor(self._executor, self._predict, features)
        return Generation(
            output={"label": label},
            model=self.model_name,
            confidence=confidence,
        )

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
