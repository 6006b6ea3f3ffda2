"""Adapter for classic ML models behind KServe v2 / the Open Inference Protocol.

    POST {base_url}/v2/models/{model_name}[/versions/{version}]/infer
    {"id": request_id, "inputs": [{"name", "shape": [1, n], "datatype", "data"}]}

`call.input["features"]` (one row of numbers) becomes the single input tensor;
`call.input["inputs"]` is sent as it is, for models with several or named inputs.
The answer's label output and probability output are found by name (`label` /
`predict`, `probabilities` / `predict_proba`), else the first output is the label.
Output is `{"label": ...}`; confidence is the top class probability when the model
returns probabilities, else the tier's default.  HTTP failures map to the same
errors as every HTTP adapter (`http_errors`).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any
from urllib.parse import quote

import httpx

from streams.adapters.base import Generation, ModelCall
from streams.adapters.errors import (
    MalformedResponse,
    ModelRequestRejected,
    ModelTimeout,
    StreamTruncated,
)
from streams.adapters.http_client import json_request, upstream_client
from streams.adapters.http_errors import (
    error_from_status,
    error_from_transport,
    read_error_body,
)
from streams.config import OpenInferenceConfig, TierConfig

LABEL_OUTPUT_NAMES = ("label", "labels", "predict", "prediction", "predictions", "output_label")
PROBABILITY_OUTPUT_NAMES = (
    "probabilities",
    "probability",
    "predict_proba",
    "probas",
    "scores",
    "output_probability",
)
FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})


def first_row(output: dict[str, Any]) -> list[Any]:
    """The first row of a tensor, whether `data` is flat (row-major, as the spec says) or nested."""
    data = output.get("data")
    if not isinstance(data, list):
        raise ValueError(f"output {output.get('name')!r} has no data list")
    if data and isinstance(data[0], list):
        return list(data[0])
    shape = output.get("shape") or [len(data)]
    width = int(shape[-1]) if len(shape) > 1 else len(data)
    return data[:width] if len(shape) > 1 else data


def find_output(outputs: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, Any] | None:
    by_name = {str(output.get("name", "")).lower(): output for output in outputs}
    for name in names:
        if name in by_name:
            return by_name[name]
    return None


class OpenInferenceAdapter:
    """`generate` returns `{"label": ...}` with the top probability as confidence."""

    def __init__(self, config: OpenInferenceConfig, tier: TierConfig) -> None:
        self.config = config
        self.tier = tier
        self.model_name = config.model_name
        self._where = f"tier {tier.name} ({config.model_name})"
        self._client, self._redact = upstream_client(
            config.base_url,
            config.headers,
            config.api_key(),
            tier.max_in_flight,
            connect_timeout_s=tier.timeout_ms / 1000,
        )
        path = f"v2/models/{quote(config.model_name, safe='')}"
        if config.model_version is not None:
            path += f"/versions/{quote(config.model_version, safe='')}"
        self._infer_path = path + "/infer"

    def __repr__(self) -> str:
        return (
            f"OpenInferenceAdapter(tier={self.tier.name!r}, model={self.config.model_name!r}, "
            f"base_url={self.config.base_url!r})"
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def request_body(self, call: ModelCall) -> dict[str, Any]:
        inputs = call.input.get("inputs")
        if inputs is not None:
            if not isinstance(inputs, list) or not inputs:
                raise ModelRequestRejected(
                    f"{self._where}: input `inputs` must be a non-empty list"
                )
            return {"id": call.request_id, "inputs": inputs}
        features = call.input.get("features")
        if not isinstance(features, list) or not features:
            raise ModelRequestRejected(
                f"{self._where}: input needs a non-empty `features` list or an `inputs` list"
            )
        if self.config.input_datatype != "BYTES" and not all(
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            for value in features
        ):
            raise ModelRequestRejected(
                f"{self._where}: `features` must be finite numbers "
                f"for datatype {self.config.input_datatype}"
            )
        return {
            "id": call.request_id,
            "inputs": [
                {
                    "name": self.config.input_name,
                    "shape": [1, len(features)],
                    "datatype": self.config.input_datatype,
                    "data": features,
                }
            ],
        }

    async def generate(self, call: ModelCall) -> Generation:
        body = self.request_body(call)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as timer:

                def on_sent() -> None:
                    # The limit starts now, not while the call waited for a pooled connection.
                    call.clock.sent()
                    timer.reschedule(loop.time() + call.timeout_s)

                call.clock.queued()
                request = json_request(
                    self._client, self._infer_path, body, where=self._where, on_sent=on_sent
                )
                try:
                    response = await self._client.send(request, stream=True)
                except httpx.TransportError as exc:
                    raise error_from_transport(
                        exc, where=self._where, redact=self._redact
                    ) from None
                try:
                    if response.status_code >= 300:
                        raise error_from_status(
                            response.status_code,
                            response.headers,
                            await read_error_body(response),
                            where=self._where,
                            redact=self._redact,
                        )
                    try:
                        raw = await response.aread()
                    except httpx.TransportError as exc:
                        raise StreamTruncated(
                            f"{self._where}: response body cut ({type(exc).__name__})"
                        ) from None
                finally:
                    await response.aclose()
        except TimeoutError:
            raise ModelTimeout(
                f"{self._where}: no answer within the total limit of {call.timeout_s * 1000:g} ms"
            ) from None
        return self._generation(raw)

    def _generation(self, raw: bytes) -> Generation:
        try:
            data = json.loads(raw)
        except ValueError:
            raise MalformedResponse(f"{self._where}: response body is not JSON") from None
        outputs = data.get("outputs") if isinstance(data, dict) else None
        if (
            not isinstance(outputs, list)
            or not outputs
            or not all(isinstance(output, dict) for output in outputs)
        ):
            raise MalformedResponse(f"{self._where}: response has no outputs")
        try:
            label_output = find_output(outputs, LABEL_OUTPUT_NAMES)
            probability_output = find_output(outputs, PROBABILITY_OUTPUT_NAMES)
            if label_output is None:
                label_output = next(o for o in outputs if o is not probability_output)
            label_row = first_row(label_output)
            probabilities = (
                [float(p) for p in first_row(probability_output)]
                if probability_output is not None
                else None
            )
        except StopIteration:
            # The only output is the probability vector: the label is its arg-max.
            label_output = None
            label_row = []
            probabilities = [float(p) for p in first_row(outputs[0])]
        except (ValueError, TypeError) as exc:
            raise MalformedResponse(f"{self._where}: unreadable outputs: {exc}") from None

        if (
            probabilities is None
            and label_output is not None
            and len(outputs) == 1
            and str(label_output.get("datatype", "")).upper() in FLOAT_DATATYPES
            and len(label_row) > 1
        ):
            # A lone float vector per row is a probability output under another name.
            probabilities = [float(p) for p in label_row]
            label_row = []
        if label_row:
            label = label_row[0]
        elif probabilities:
            label = max(range(len(probabilities)), key=probabilities.__getitem__)
        else:
            raise MalformedResponse(f"{self._where}: label output is empty")

        extra: dict[str, Any] = {"model_version": data.get("model_version")}
        confidence = self.tier.default_confidence
        if probabilities:
            confidence = max(probabilities)
            extra["probabilities"] = probabilities
        return Generation(
            output={"label": label},
            model=self.config.model_name,
            confidence=confidence,
            extra=extra,
        )


__all__ = ["OpenInferenceAdapter"]
