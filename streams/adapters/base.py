"""The one interface every model adapter implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ModelCall:
    """What an adapter is asked: the request's input and params, and the time it has."""

    request_id: str
    input: dict[str, Any]
    params: dict[str, Any]
    timeout_s: float


@dataclass(frozen=True)
class Generation:
    """A complete answer with its metrics.  Adapters raise `ModelError` instead of
    returning a partial one."""

    output: Any
    model: str
    confidence: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ModelAdapter(Protocol):
    """`generate` returns a whole answer or raises `streams.adapters.errors.ModelError`.

    The caller enforces the tier's total timeout around `generate`; adapters that
    stream enforce their own first-token and stall limits inside it.
    """

    model_name: str

    async def generate(self, call: ModelCall) -> Generation: ...

    async def aclose(self) -> None: ...
