"""Errors of the streaming layer (see the tree in `schemas/errors.py`)."""

from __future__ import annotations

from schemas.errors import FallbackError


class ConfigError(FallbackError):
    """The configuration file is missing or invalid; the message names the field."""


class BrokerError(FallbackError):
    """The embedded broker could not be started or did not answer."""
