"""OpenInferenceAdapter against a local KServe v2 server serving a real scikit-learn model."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from schemas.events import Trigger
from streams.adapters.base import Generation, ModelCall
from streams.adapters.errors import (
    MalformedResponse,
    ModelAccessRefused,
    ModelError,
    ModelRequestRejected,
    ModelTimeout,
    ModelUnavailable,
    RateLimited,
)
from streams.adapters.open_inference import OpenInferenceAdapter
from streams.config import OpenInferenceConfig, TierConfig
from tests.fakes import FakeOpenInferenceServer, OpenInferenceFault

SECRET_KEY = "kserve-token-0123456789SECRETabcdef"
KEY_ENV = "TEST_KSERVE_TOKEN"

AdapterFactory = Callable[..., OpenInferenceAdapter]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenInferenceServer]:
    with FakeOpenInferenceServer(model_version="3") as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_server(server: FakeOpenInferenceServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.reset()
    server.outputs = ("predict", "predict_proba")
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)


@pytest.fixture
async def make_adapter(server: FakeOpenInferenceServer) -> AsyncIterator[AdapterFactory]:
    adapters: list[OpenInferenceAdapter] = []

    def build(**adapter: Any) -> OpenInferenceAdapter:
        settings: dict[str, Any] = {
            "kind": "open_inference",
            "base_url": server.base_url,
            "model_name": "digits",
            "api_key_env": KEY_ENV,
            **adapter,
        }
        config = OpenInferenceConfig(**settings)
        built = OpenInferenceAdapter(
            config, TierConfig(name="classic", adapter=config, default_confidence=0.6)
        )
        adapters.append(built)
        return built

    yield build
    for adapter in adapters:
        await adapter.aclose()


def digit(server: FakeOpenInferenceServer, index: int) -> list[float]:
    return [float(value) for value in server.samples[index]]


def call(features: list[float], *, timeout_s: float = 5.0, request_id: str = "req-7") -> ModelCall:
    return ModelCall(request_id, {"features": features}, {}, timeout_s)


async def test_prediction_and_confidence_come_from_the_served_model(
    server: FakeOpenInferenceServer, make_adapter: AdapterFactory
) -> None:
    adapter = make_adapter()
    for index in (1500, 1600, 1700, 1796):  # held out of training
        features = digit(server, index)
        generation = await adapter.generate(call(features))

        expected_label = int(server.classifier.predict([features])[0])
        expected_confidence = float(server.classifier.predict_proba([features])[0].max())
        assert generation.output == {"label": expected_label}
        assert generation.confidence == pytest.approx(expected_confidence)
        assert generation.model == "digits"
        assert len(generation.extra["probabilities"]) == 10

    request = server.requests[0]
    assert request.path == "/v2/models/digits/infer"
    assert request.body == {
        "id": "req-7",
        "inputs": [
            {"name": "input-0", "shape": [1, 64], "datatype": "FP32", "data": digit(server, 1500)}
        ],
    }
    assert request.headers["Authorization"] == f"Bearer {SECRET_KEY}"


async def test_versioned_path_and_inputs_passed_through(
    server: FakeOpenInferenceServer, make_adapter: AdapterFactory
) -> None:
    adapter = make_adapter(model_version="3")
    inputs = [{"name": "pixels", "shape": [1, 64], "datatype": "FP64", "data": digit(server, 5)}]
    generation = await adapter.generate(ModelCall("req-8", {"inputs": inputs}, {}, 1.0))

    assert server.requests[0].path == "/v2/models/digits/versions/3/infer"
    assert server.requests[0].body == {"id": "req-8", "inputs": inputs}
    assert generation.output == {"label": int(server.targets[5])}


@pytest.mark.parametrize(
    ("outputs", "confidence_from_model"),
    [
        (("label", "probabilities"), True),
        (("predict_proba", "predict"), True),  # found by name, not by position
        (("output-0",), False),  # KServe sklearn server: a label only
        (("predict_proba",), True),  # probabilities only: the label is the arg-max
    ],
)
async def test_output_conventions(
    server: FakeOpenInferenceServer,
    make_adapter: AdapterFactory,
    outputs: tuple[str, ...],
    confidence_from_model: bool,
) -> None:
    server.outputs = outputs
    features = digit(server, 1650)
    generation = await make_adapter().generate(call(features))

    assert generation.output == {"label": int(server.classifier.predict([features])[0])}
    expected = float(server.classifier.predict_proba([features])[0].max())
    assert generation.confidence == pytest.approx(expected if confidence_from_model else 0.6)


async def test_bad_features_are_rejected_without_a_call(
    server: FakeOpenInferenceServer, make_adapter: AdapterFactory
) -> None:
    adapter = make_adapter()
    payloads: list[dict[str, Any]] = [
        {"features": []},
        {"features": ["a", "b"]},
        {"features": [1.0, float("nan")]},
        {"features": [float("-inf")]},
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [float("nan")]}]},
        {"prompt": "hi"},
    ]
    for payload in payloads:
        with pytest.raises(ModelRequestRejected) as caught:
            await adapter.generate(ModelCall("req-9", payload, {}, 1.0))
        assert caught.value.trigger is Trigger.BAD_REQUEST
    assert server.request_count == 0


async def test_server_rejection_is_a_rejected_request(
    server: FakeOpenInferenceServer, make_adapter: AdapterFactory
) -> None:
    with pytest.raises(ModelRequestRejected, match="HTTP 400: expected shape") as wrong_shape:
        await make_adapter().generate(call([1.0, 2.0, 3.0]))
    # A 404 names the tier's model: the tier's fault, counted against its health.
    with pytest.raises(ModelAccessRefused, match="HTTP 404") as unknown_model:
        await make_adapter(model_name="missing").generate(call(digit(server, 0)))
    assert not wrong_shape.value.retryable
    assert wrong_shape.value.trigger is Trigger.BAD_REQUEST
    assert not unknown_model.value.retryable
    assert unknown_model.value.trigger is Trigger.ERROR


@pytest.mark.parametrize(
    ("fault", "options", "error_type", "trigger", "retryable"),
    [
        (OpenInferenceFault.SERVER_ERROR, {}, ModelUnavailable, Trigger.ERROR, True),
        (OpenInferenceFault.SERVER_ERROR, {"status": 503}, ModelUnavailable, Trigger.ERROR, True),
        (OpenInferenceFault.SLOW, {"delay_s": 3.0}, ModelTimeout, Trigger.TIMEOUT, True),
        (OpenInferenceFault.MALFORMED, {}, MalformedResponse, Trigger.ERROR, False),
        (
            OpenInferenceFault.RATE_LIMIT,
            {"retry_after": "4"},
            RateLimited,
            Trigger.RATE_LIMITED,
            True,
        ),
    ],
    ids=["500", "503", "slow", "malformed", "429"],
)
async def test_faults(
    server: FakeOpenInferenceServer,
    make_adapter: AdapterFactory,
    fault: OpenInferenceFault,
    options: dict[str, Any],
    error_type: type[ModelError],
    trigger: Trigger,
    retryable: bool,
) -> None:
    adapter = make_adapter()
    server.set_fault(fault, **options)
    answers: list[Generation] = []
    started = time.perf_counter()
    with pytest.raises(error_type) as caught:
        answers.append(await adapter.generate(call(digit(server, 3), timeout_s=0.5)))
    error = caught.value

    assert answers == []
    assert time.perf_counter() - started < 1.0
    assert error.trigger == trigger
    assert error.retryable is retryable
    assert server.request_count == 1
    if fault is OpenInferenceFault.RATE_LIMIT:
        assert error.retry_after_s == 4.0
    if fault is OpenInferenceFault.SLOW:
        assert "total limit of 500 ms" in str(error)
    for text in (str(error), repr(error), repr(adapter)):
        assert SECRET_KEY not in text

    server.set_fault(OpenInferenceFault.OK)
    assert (await adapter.generate(call(digit(server, 3)))).output == {"label": 3}


async def test_fail_the_first_call_then_serve(
    server: FakeOpenInferenceServer, make_adapter: AdapterFactory
) -> None:
    adapter = make_adapter()
    server.set_fault(OpenInferenceFault.SERVER_ERROR, times=1, status=503)
    with pytest.raises(ModelUnavailable, match="HTTP 503: model server crashed"):
        await adapter.generate(call(digit(server, 0)))
    assert (await adapter.generate(call(digit(server, 0)))).output == {"label": 0}
    assert server.request_count == 2
