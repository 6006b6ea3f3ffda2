"""The HTTP handlers: POST /v1/chat/completions, GET /v1/models, GET /health.

A call: key -> caller (401), limits (429), body -> pipeline request (400,
404), then the pipeline's response -> a completion, a stream or an error
(503, 400), or the deadline (504).  Nothing here logs a request or a header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from schemas.events import Request, Response
from streams.config.models import GatewayConfig
from streams.gateway.errors import (
    ApiError,
    deadline_exceeded,
    invalid_api_key,
    invalid_request,
    model_not_found,
    not_queued,
    rate_limited,
)
from streams.gateway.keys import Caller, KeyRing
from streams.gateway.limits import KeyLimits
from streams.gateway.openai_request import (
    TIMEOUT_HEADER,
    ChatCompletionBody,
    deadline_ms,
    parse_body,
    pipeline_request,
)
from streams.gateway.openai_response import (
    completion,
    completion_chunks,
    fallback_headers,
    outcome_error,
)
from streams.gateway.pipeline_link import DeadlinePassed, NotQueued, PipelineLink
from streams.gateway.response_waiters import Arrival

log = logging.getLogger(__name__)

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


def sse_event(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


@web.middleware
async def openai_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error leaves in OpenAI's shape, aiohttp's own (404, 405, 413) included."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text or exc.reason
        error = ApiError(exc.status, message, type="invalid_request_error", code=None)
        return web.json_response(error.body(), status=exc.status)


@dataclass
class GatewayRoutes:
    gateway: GatewayConfig
    keys: KeyRing
    limits: KeyLimits
    link: PipelineLink

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model}", self.get_model)
        app.router.add_get("/health", self.health)

    def caller(self, request: web.Request) -> Caller:
        caller = self.keys.caller(request.headers.get("Authorization"))
        if caller is None:
            raise invalid_api_key()
        return caller

    # ---------------------------------------------------------- models ----

    def model_object(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "model-fallback"}

    async def list_models(self, request: web.Request) -> web.Response:
        self.caller(request)
        names = self.gateway.model_names()
        return web.json_response({"object": "list", "data": [self.model_object(n) for n in names]})

    async def get_model(self, request: web.Request) -> web.Response:
        self.caller(request)
        name = request.match_info["model"]
        if name not in self.gateway.model_names():
            raise model_not_found(name, self.gateway.model_names())
        return web.json_response(self.model_object(name))

    # ---------------------------------------------------------- health ----

    async def health(self, request: web.Request) -> web.Response:
        state = self.link.state
        counts = self.link.waiters.counts
        body = {
            "ready": self.link.reading,
            "replica": self.gateway.replica_index,
            "responses_partitions": state.partitions if state else None,
            "reads_partitions": list(state.owned) if state else [],
            "waiting": len(self.link.waiters.waiting),
            "delivered": counts.delivered,
            "late_responses": counts.late,
            "duplicate_responses": counts.duplicates,
            "unknown_responses": counts.unknown,
            "undecodable_responses": counts.undecodable,
        }
        return web.json_response(body, status=200 if body["ready"] else 503)

    # ----------------------------------------------------- completions ----

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        received = loop.time()
        created_at = datetime.now(UTC)
        caller = self.caller(request)
        refusal = self.limits.admit(caller, received)
        if refusal is not None:
            raise rate_limited(refusal.message, refusal.retry_after_s)
        try:
            body = parse_body(await self.read_json(request))
            timeout_ms = deadline_ms(request.headers.get(TIMEOUT_HEADER), self.gateway)
            call = pipeline_request(
                body,
                caller=caller,
                request_id=self.link.new_request_id(),
                deadline_ms=timeout_ms,
                gateway=self.gateway,
                created_at=created_at,
            )
            wait_s = max(timeout_ms / 1000 - (loop.time() - received), 0.0)
            if not body.stream:
                return self.answer(await self.outcome(call, wait_s, timeout_ms))
            outcome = asyncio.ensure_future(self.outcome(call, wait_s, timeout_ms))
            try:
                return await self.stream(request, body, outcome, call.request_id)
            finally:
                outcome.cancel()
        finally:
            self.limits.release(caller)

    @staticmethod
    async def read_json(request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            raise invalid_request("The request body is not valid JSON.") from None

    async def outcome(self, call: Request, wait_s: float, timeout_ms: int) -> Arrival:
        try:
            return await self.link.call(call, wait_s)
        except DeadlinePassed:
            raise deadline_exceeded(call.request_id, timeout_ms) from None
        except NotQueued:
            raise not_queued(call.request_id) from None

    @staticmethod
    def answer(arrival: Arrival) -> web.Response:
        response = arrival.response
        if response.status != "served":
            raise outcome_error(response)
        headers = fallback_headers(response, arrival.hop_ms)
        return web.json_response(completion(response), headers=headers)

    async def stream(
        self,
        request: web.Request,
        body: ChatCompletionBody,
        outcome: asyncio.Future[Arrival],
        request_id: str,
    ) -> web.StreamResponse:
        """SSE once the answer is accepted: the pipeline never serves a partial answer,
        so there is nothing to stream before that.  Without keep-alives the status
        line waits for the outcome, so an error keeps its status (503, 504, 400)."""
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        keepalive_ms = self.gateway.stream_keepalive_ms
        if keepalive_ms is None:
            return await self.stream_answer(request, await outcome, include_usage)
        done, _ = await asyncio.wait({outcome}, timeout=keepalive_ms / 1000)
        if done:
            return await self.stream_answer(request, outcome.result(), include_usage)
        sse = web.StreamResponse(headers={**SSE_HEADERS, "x-fallback-request-id": request_id})
        await sse.prepare(request)
        while not outcome.done():
            await sse.write(b": keep-alive\n\n")
            await asyncio.wait({outcome}, timeout=keepalive_ms / 1000)
        try:
            response = outcome.result().response
            if response.status != "served":
                raise outcome_error(response)
        except ApiError as exc:
            # Too late for a status code: an error event, which the SDKs raise.
            await sse.write(sse_event(exc.body()))
            await sse.write_eof()
            return sse
        await self.write_chunks(sse, response, include_usage)
        return sse

    async def stream_answer(
        self, request: web.Request, arrival: Arrival, include_usage: bool
    ) -> web.StreamResponse:
        response = arrival.response
        if response.status != "served":
            raise outcome_error(response)
        headers = {**SSE_HEADERS, **fallback_headers(response, arrival.hop_ms)}
        sse = web.StreamResponse(headers=headers)
        await sse.prepare(request)
        await self.write_chunks(sse, response, include_usage)
        return sse

    @staticmethod
    async def write_chunks(sse: web.StreamResponse, response: Response, usage: bool) -> None:
        payload = b"".join(sse_event(chunk) for chunk in completion_chunks(response, usage))
        await sse.write(payload + sse_event("[DONE]"))
        with contextlib.suppress(ConnectionResetError):
            await sse.write_eof()
