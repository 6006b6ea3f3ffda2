"""Errors of the operator tools (see the tree in `schemas/errors.py`)."""

from __future__ import annotations

from schemas.errors import FallbackError


class BrokerError(FallbackError):
    """The embedded broker could not be started or did not answer."""
