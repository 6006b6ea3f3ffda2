"""A local KServe v2 / Open Inference Protocol server serving a real scikit-learn model.

The model is a logistic regression trained at start-up on scikit-learn's bundled
digits data (8x8 images, 64 features, 10 classes; no download), so answers are
real predictions tests can compare with `server.classifier.predict`.

    with FakeOpenInferenceServer() as server:      # POST /v2/models/digits/infer
        server.set_fault(OpenInferenceFault.SERVER_ERROR, times=1, status=503)

`outputs` chooses which tensors an answer has and their names, to mimic different
servers: ("predict", "predict_proba") by default; KServe's sklearn server answers
with a single "output-0" label tensor.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from aiohttp import web

from tests.fakes.threaded_server import ThreadedAiohttpServer


class OpenInferenceFault(StrEnum):
    OK = "ok"
    SERVER_ERROR = "server_error"  # 500 (or `status`), KServe's {"error": "..."} body
    SLOW = "slow"  # answer after `delay_s`
    MALFORMED = "malformed"  # 200 with a body that is not JSON
    RATE_LIMIT = "rate_limit"  # 429 with Retry-After


class FakeOpenInferenceServer(ThreadedAiohttpServer):
    def __init__(
        self,
        *,
        model_name: str = "digits",
        model_version: str | None = None,
        outputs: tuple[str, ...] = ("predict", "predict_proba"),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.model_name = model_name
        self.model_version = model_version
        self.outputs = outputs
        self.classifier: Any = None
        self.samples: Any = None  # digits images (n, 64) for tests to send
        self.targets: Any = None

    @property
    def base_url(self) -> str:
        return self.root_url

    def train(self) -> None:
        # Imported here so `import tests.fakes` stays light for tests that never use this.
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        digits = load_digits()
        self.samples, self.targets = digits.data, digits.target
        self.classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        self.classifier.fit(self.samples[:1500], self.targets[:1500])

    def build_app(self) -> web.Application:
        if self.classifier is None:
            self.train()
        app = web.Application()
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_get("/v2/models/{name}", self.metadata)
        app.router.add_post("/v2/models/{name}/infer", self.infer)
        app.router.add_post("/v2/models/{name}/versions/{version}/infer", self.infer)
        return app

    async def ready(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def metadata(self, request: web.Request) -> web.Response:
        if request.match_info["name"] != self.model_name:
            return web.json_response(
                {"error": f"Model {request.match_info['name']} not found"}, status=404
            )
        return web.json_response(
            {
                "name": self.model_name,
                "versions": [self.model_version] if self.model_version else [],
                "platform": "sklearn",
                "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 64]}],
                "outputs": [
                    {"name": name, "datatype": "FP64", "shape": [-1]} for name in self.outputs
                ],
            }
        )

    async def infer(self, request: web.Request) -> web.Response:
        import numpy as np

        raw = await request.text()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        fault_name, options = self.faults.take()
        fault = OpenInferenceFault(fault_name)
        self.record(request, body, fault.value)

        name = request.match_info["name"]
        version = request.match_info.get("version")
        if name != self.model_name or (version is not None and version != self.model_version):
            return web.json_response({"error": f"Model {name} not found"}, status=404)
        match fault:
            case OpenInferenceFault.SERVER_ERROR:
                return web.json_response(
                    {"error": "model server crashed: out of memory"},
                    status=int(options.get("status", 500)),
                )
            case OpenInferenceFault.RATE_LIMIT:
                return web.json_response(
                    {"error": "too many requests"},
                    status=429,
                    headers={"Retry-After": str(options.get("retry_after", "1"))},
                )
            case OpenInferenceFault.SLOW:
                await self.hold(options.get("delay_s", 1.0))
            case OpenInferenceFault.MALFORMED:
                return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
            case _:
                pass

        try:
            tensor = body["inputs"][0]
            rows = np.asarray(tensor["data"], dtype=float).reshape(tensor["shape"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return web.json_response({"error": f"invalid inference request: {exc}"}, status=400)
        if rows.ndim != 2 or rows.shape[1] != 64:
            return web.json_response(
                {"error": f"expected shape [-1, 64], got {list(rows.shape)}"}, status=400
            )
        labels = self.classifier.predict(rows)
        probabilities = self.classifier.predict_proba(rows)
        tensors: dict[str, dict[str, Any]] = {
            "label": {"datatype": "INT64", "shape": [len(labels)], "data": labels.tolist()},
            "probabilities": {
                "datatype": "FP64",
                "shape": list(probabilities.shape),
                "data": probabilities.ravel().tolist(),
            },
        }
        outputs = []
        for output_name in self.outputs:
            is_probabilities = "prob" in output_name or "score" in output_name
            tensor_out = tensors["probabilities" if is_probabilities else "label"]
            outputs.append({"name": output_name, **tensor_out})
        return web.json_response(
            {
                "model_name": self.model_name,
                "model_version": self.model_version,
                "id": body.get("id", ""),
                "parameters": {},
                "outputs": outputs,
            }
        )


__all__ = ["FakeOpenInferenceServer", "OpenInferenceFault"]
