"""One record as a pipeline stage receives it: raw bytes and where they came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    #: Kafka headers as received (the trace context travels here)
    headers: tuple[tuple[str, bytes], ...] | None = None
