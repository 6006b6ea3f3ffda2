"""Reading a caller's request off the requests topic: every field bounded, every refusal named.

`read_request` returns a `Request` or raises `EventDecodeError` whose
`reason` is one line saying what is wrong (never the offending text itself,
only its place), and whose `request_id` is set whenever a caller could be
answered.  A request is refused when:

- it is larger than `max_bytes` (JSON or Avro);
- it is not UTF-8 (the first bad byte's offset is named), not JSON, not a
  JSON object, or not Avro;
- it is nested deeper than `max_depth` (the outer object counts 1), or holds
  NaN or an infinite number, or a string that is not valid Unicode (a lone
  surrogate escape);
- a field breaks the contract (`schemas.events.Request`: types, lengths,
  control characters in identifiers);
- `deadline_ms` is above `max_deadline_ms`, or `created_at` is more than
  `created_at_max_age_s` before now or `created_at_max_ahead_s` after it.

Bounding every field here is what lets the later stages trust a request:
without it a 2**63 deadline or a year-9999 timestamp overflowed deep inside
a stage, after the point where the caller could still be told.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from schemas.codec import decode_avro
from schemas.errors import EventDecodeError, EventTooLarge
from schemas.events import MAX_REQUEST_ID_CHARS, Request

__all__ = ["RequestLimits", "read_request", "readable_request_id", "request_id_in_prefix"]

#: how much of an unreadable request is searched for its request_id
REQUEST_ID_SEARCH_BYTES = 64 * 1024
#: a refusal's reason is cut to this many characters
MAX_REASON_CHARS = 1000
#: field errors listed in one reason at most
MAX_PROBLEMS = 5
#: characters of one path element (a key name may be anything) in a reason
MAX_PATH_PART_CHARS = 40

_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_WHITESPACE = " \t\n\r"


@dataclass(frozen=True)
class RequestLimits:
    """The worker's bounds on a request (`worker.*` in the config)."""

    max_bytes: int = 1_000_000
    max_depth: int = 64
    max_deadline_ms: int = 86_400_000
    created_at_max_age_s: float = 7 * 86_400
    created_at_max_ahead_s: float = 300.0


def read_request(payload: bytes, limits: RequestLimits, now: datetime) -> Request:
    """A caller's request: JSON by default, Avro (magic-less, schemaless) too."""
    if len(payload) > limits.max_bytes:
        raise EventTooLarge(
            f"request is {len(payload)} bytes, above worker.max_request_bytes={limits.max_bytes}",
            request_id=request_id_in_prefix(payload[:REQUEST_ID_SEARCH_BYTES]),
        )
    request: Request | None = None
    if not _looks_like_json(payload):
        # Not Avro either: report it as the JSON it most likely meant to be.
        with contextlib.suppress(EventDecodeError):
            request = decode_avro(Request, payload)
    problems: list[str] = []
    if request is None:
        request = _read_json(payload, limits)
    else:
        # The JSON path checks the whole document as it parses; Avro's JSON fields only here.
        for name, value in (("input", request.input), ("params", request.params)):
            problem = _shape_problem(value, limits.max_depth, 2, name)
            if problem is not None:
                problems.append(problem)
    problems += _problems_beyond_limits(request, limits, now)
    if problems:
        raise EventDecodeError(_join(problems), request_id=request.request_id)
    return request


def _read_json(payload: bytes, limits: RequestLimits) -> Request:
    bad_byte: int | None = None
    try:
        text = payload.decode()
    except UnicodeDecodeError as exc:
        # Still parsed (bad bytes kept as surrogates) so the request_id can be read.
        bad_byte = exc.start
        text = payload.decode(errors="surrogateescape")
    try:
        data = json.loads(text)
    except RecursionError:
        raise EventDecodeError(
            f"request is nested deeper than worker.max_request_depth={limits.max_depth}",
            request_id=request_id_in_prefix(payload[:REQUEST_ID_SEARCH_BYTES]),
        ) from None
    except ValueError as exc:  # JSONDecodeError, or an integer of over 4,300 digits
        reason = (
            f"request is not valid JSON: {exc}"
            if bad_byte is None
            else f"request is not valid UTF-8: invalid byte at offset {bad_byte}"
        )
        raise EventDecodeError(
            _cut(reason),
            request_id=request_id_in_prefix(payload[:REQUEST_ID_SEARCH_BYTES]),
        ) from None
    if not isinstance(data, dict):
        raise EventDecodeError(f"request must be a JSON object, got {type(data).__name__}")
    request_id = readable_request_id(data.get("request_id"))
    if bad_byte is not None:
        raise EventDecodeError(
            f"request is not valid UTF-8: invalid byte at offset {bad_byte}",
            request_id=request_id,
        )
    problem = _shape_problem(data, limits.max_depth, 1)
    if problem is not None:
        raise EventDecodeError(problem, request_id=request_id)
    try:
        return Request.model_validate(data)
    except ValidationError as exc:
        raise EventDecodeError(_validation_reason(exc), request_id=request_id) from None


def _problems_beyond_limits(request: Request, limits: RequestLimits, now: datetime) -> list[str]:
    problems: list[str] = []
    if request.deadline_ms is not None and request.deadline_ms > limits.max_deadline_ms:
        problems.append(f"deadline_ms: above worker.max_deadline_ms={limits.max_deadline_ms}")
    try:
        ahead = request.created_at - now
    except OverflowError:  # e.g. year 9999 with a negative UTC offset
        ahead = timedelta.max if request.created_at.year > now.year else timedelta.min
    if ahead > timedelta(seconds=limits.created_at_max_ahead_s):
        problems.append(
            "created_at: more than "
            f"worker.created_at_max_ahead_s={limits.created_at_max_ahead_s:g} after now"
        )
    elif ahead < -timedelta(seconds=limits.created_at_max_age_s):
        problems.append(
            f"created_at: more than worker.created_at_max_age_s={limits.created_at_max_age_s:g} "
            "before now"
        )
    return problems


def _shape_problem(value: dict[str, Any], max_depth: int, depth: int, path: str = "") -> str | None:
    """Depth, non-finite numbers and invalid Unicode anywhere in a JSON object that
    sits at `depth` in the request (the outer object is depth 1).

    Iterative, so depth itself cannot overflow the interpreter's stack; the
    path of a child is only spelled out when it is at fault.
    """
    stack: list[tuple[Any, int, tuple[object, ...]]] = [(value, depth, (path,) if path else ())]
    while stack:
        item, level, where = stack.pop()
        if level > max_depth:
            return f"{_where(where)}: nested deeper than worker.max_request_depth={max_depth}"
        children = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in children:
            if isinstance(key, str) and _SURROGATE.search(key):
                return f"{_where(where)}: a key is not valid Unicode (a lone surrogate)"
            if isinstance(child, dict | list):
                stack.append((child, level + 1, (*where, key)))
            elif isinstance(child, float) and not math.isfinite(child):
                return f"{_where((*where, key))}: NaN and infinite numbers are not allowed"
            elif isinstance(child, str) and _SURROGATE.search(child):
                return f"{_where((*where, key))}: not valid Unicode (a lone surrogate)"
    return None


def _where(path: tuple[object, ...]) -> str:
    return ".".join(_printable(str(part)) for part in path) or "request"


def _printable(text: str) -> str:
    """A caller's key name as it may appear in a reason and a log line: short, one line."""
    if len(text) > MAX_PATH_PART_CHARS:
        text = text[:MAX_PATH_PART_CHARS] + "..."
    if text.isprintable():
        return text
    return text.encode("unicode_escape", errors="backslashreplace").decode("ascii")


def _validation_reason(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    problems = [f"{_where(tuple(err['loc']))}: {err['msg']}" for err in errors[:MAX_PROBLEMS]]
    if len(errors) > MAX_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_PROBLEMS} more")
    return _join(problems)


def _join(problems: list[str]) -> str:
    return _cut("; ".join(problems))


def _cut(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."


def _looks_like_json(payload: bytes) -> bool:
    return not payload or payload[:1] in (b"{", b" ", b"\n", b"\t", b"\r")


def readable_request_id(value: object) -> str | None:
    """`value` if a caller can be answered under it: 1-256 characters of valid Unicode."""
    if (
        isinstance(value, str)
        and 0 < len(value) <= MAX_REQUEST_ID_CHARS
        and not _SURROGATE.search(value)
    ):
        return value
    return None


def request_id_in_prefix(head: bytes) -> str | None:
    """The request_id of a request that cannot be read whole, from its first bytes.

    JSON: the top-level `request_id` member, if it comes before the value that
    broke parsing (or before the cut).  Avro: the first field of `request.avsc`.
    """
    if _looks_like_json(head):
        return _json_request_id(head)
    return _avro_request_id(head)


def _json_request_id(head: bytes) -> str | None:
    text = head.decode(errors="surrogateescape")
    decoder = json.JSONDecoder()
    at = _skip_whitespace(text, 0)
    if text[at : at + 1] != "{":
        return None
    at += 1
    try:
        while True:
            at = _skip_whitespace(text, at)
            name, at = decoder.raw_decode(text, at)
            at = _skip_whitespace(text, at)
            if not isinstance(name, str) or text[at : at + 1] != ":":
                return None
            at = _skip_whitespace(text, at + 1)
            value, at = decoder.raw_decode(text, at)
            if name == "request_id":
                return readable_request_id(value)
            at = _skip_whitespace(text, at)
            if text[at : at + 1] != ",":
                return None
            at += 1
    except (ValueError, RecursionError):  # cut off, malformed, or nested too deep
        return None


def _skip_whitespace(text: str, at: int) -> int:
    while at < len(text) and text[at] in _JSON_WHITESPACE:
        at += 1
    return at


def _avro_request_id(head: bytes) -> str | None:
    """Avro writes a string as its zigzag varint length, then its UTF-8 bytes."""
    length, shift, at = 0, 0, 0
    while at < min(len(head), 10):
        byte = head[at]
        length |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            break
        shift += 7
    else:
        return None
    size = (length >> 1) ^ -(length & 1)
    if not 0 < size <= 4 * MAX_REQUEST_ID_CHARS or at + size > len(head):
        return None
    try:
        return readable_request_id(head[at : at + size].decode())
    except UnicodeDecodeError:
        return None
