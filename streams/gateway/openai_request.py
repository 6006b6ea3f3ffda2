"""An OpenAI chat-completions call becomes a pipeline `Request`.

    messages                       -> input.messages (as sent)
    max_tokens, temperature, top_p, stop, seed, presence_penalty,
    frequency_penalty, response_format -> params (the fields `openai_chat` forwards)
    max_completion_tokens          -> params.max_tokens
    model                          -> a name of `gateway.model` or `gateway.chains` (its tags)
    metadata {"tags": "a,b"}       -> tags a, b; any other pair k: v -> tag "k:v"
    user                           -> tag "user:<user>"
    X-Request-Timeout-Ms header    -> deadline_ms (default and cap from the config)
    the API key                    -> tenant (never the body)
    stream, stream_options, n=1, logprobs=false: understood, nothing to pass on

Any other field is refused with a 400 naming it (a field sent as null is
ignored): the pipeline would not honour it, and silently dropping `tools` or
`n: 3` would answer a different question than the one asked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.events import Request
from streams.adapters.openai_chat import SAMPLING_PARAM_KEYS
from streams.config.models import GatewayConfig
from streams.gateway.errors import ApiError, invalid_request, model_not_found, unsupported_parameter
from streams.gateway.keys import Caller

TIMEOUT_HEADER = "X-Request-Timeout-Ms"
#: OpenAI's own limits on `metadata`
MAX_METADATA_PAIRS = 16


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ChatCompletionBody(BaseModel):
    """The part of OpenAI's request body the gateway understands."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="one choice: the accepted answer")
    logprobs: bool = Field(default=False, description="not returned: must be false")
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_format: dict[str, Any] | None = None
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None

    @field_validator("messages")
    @classmethod
    def _roles(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, message in enumerate(messages):
            if not isinstance(message.get("role"), str):
                raise ValueError(f"messages[{index}] has no string 'role'")
        return messages

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs: bool) -> bool:
        if logprobs:
            raise ValueError("logprobs are not returned by this gateway")
        return logprobs

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if metadata is not None:
            if len(metadata) > MAX_METADATA_PAIRS:
                raise ValueError(f"at most {MAX_METADATA_PAIRS} pairs")
            for key, value in metadata.items():
                if not 0 < len(key) <= 64 or len(value) > 512:
                    raise ValueError("keys are 1-64 characters, values at most 512")
        return metadata

    def params(self) -> dict[str, Any]:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise invalid_request(
                "Give max_tokens or max_completion_tokens, not both.", "max_completion_tokens"
            )
        params = {
            key: value
            for key, value in self.model_dump(include=set(SAMPLING_PARAM_KEYS)).items()
            if value is not None
        }
        if self.max_completion_tokens is not None:
            params["max_tokens"] = self.max_completion_tokens
        return params

    def caller_tags(self) -> list[str]:
        tags: list[str] = []
        for key, value in (self.metadata or {}).items():
            if key == "tags":
                tags.extend(t.strip() for t in value.split(",") if t.strip())
            else:
                tags.append(f"{key}:{value}")
        if self.user:
            tags.append(f"user:{self.user}")
        return tags


def parse_body(raw: Any) -> ChatCompletionBody:
    """The body, or a 400 naming the first field that is wrong or unsupported."""
    if not isinstance(raw, dict):
        raise invalid_request("The request body must be a JSON object.")
    present = {key: value for key, value in raw.items() if value is not None}
    try:
        return ChatCompletionBody.model_validate(present)
    except ValidationError as exc:
        raise _first_problem(exc) from None


def _first_problem(exc: ValidationError) -> ApiError:
    error = exc.errors()[0]
    param = ".".join(str(part) for part in error["loc"]) or None
    if error["type"] == "extra_forbidden" and param is not None:
        return unsupported_parameter(param)
    if error["type"] == "missing":
        return invalid_request(f"Missing required parameter: '{param}'.", param, "missing")
    return invalid_request(f"Invalid '{param}': {error['msg']}.", param, "invalid_value")


def deadline_ms(header: str | None, gateway: GatewayConfig) -> int:
    """The call's deadline: the header's, else the default; never above the cap."""
    if header is None:
        return gateway.default_timeout_ms
    try:
        value = int(header)
    except ValueError:
        value = 0
    if value <= 0:
        raise invalid_request(
            f"{TIMEOUT_HEADER} must be a positive whole number of milliseconds.", TIMEOUT_HEADER
        )
    return min(value, gateway.max_timeout_ms)


def chain_tags(model: str, gateway: GatewayConfig) -> list[str]:
    """The tags that select the chain `model` names (404 for a name not configured)."""
    if model == gateway.model:
        return []
    chain = gateway.chains.get(model)
    if chain is None:
        raise model_not_found(model, gateway.model_names())
    return list(chain.tags)


def pipeline_request(
    body: ChatCompletionBody,
    *,
    caller: Caller,
    request_id: str,
    deadline_ms: int,
    gateway: GatewayConfig,
    created_at: datetime,
) -> Request:
    tags = list(dict.fromkeys([*chain_tags(body.model, gateway), *body.caller_tags()]))
    return Request(
        request_id=request_id,
        tenant=caller.tenant,
        input={"messages": body.messages},
        params=body.params(),
        deadline_ms=deadline_ms,
        tags=tags,
        created_at=created_at,
    )
