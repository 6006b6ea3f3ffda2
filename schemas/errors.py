"""Error tree of model-fallback.

    FallbackError                    root of every error the project raises
    ├── EventError                   an event could not be read or written
    │   ├── EventDecodeError         bytes are not a valid event (bad JSON/Avro, wrong fields)
    │   └── EventTooLarge            the event exceeds the configured size limit
    ├── ConfigError                  the YAML config is invalid (names the field)
    ├── ModelError                   (streams.adapters.errors) a model call failed
    └── AnalyticsError               (analytics.errors) ClickHouse/chDB failed

Each error carries `retryable`: only errors that say so are retried.
"""

from __future__ import annotations


class FallbackError(Exception):
    """Root of every error raised by model-fallback."""

    retryable: bool = False


class EventError(FallbackError):
    """An event could not be decoded or encoded."""


class EventDecodeError(EventError):
    """Bytes on a topic are not a valid event; `request_id` is set when it could be read."""

    def __init__(self, reason: str, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id


class EventTooLarge(EventDecodeError):
    """The event is larger than `worker.max_request_bytes`."""


class ConfigError(FallbackError):
    """The configuration file is missing or invalid; the message names the field.

    Here rather than in streams/: analytics/ validates its own section and must
    not import streams/."""
