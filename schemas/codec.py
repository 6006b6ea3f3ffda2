"""Wire formats: Avro (fastavro) for internal topics, JSON for the public ones.

Each `.avsc` is read and parsed the first time its event is encoded or
decoded, then cached (`functools.cache`).  Fields marked `"json": true` in an
`.avsc` hold arbitrary JSON (request input, model output) as a string; the
codec converts them both ways so callers only ever see pydantic models.
"""

from __future__ import annotations

import io
import json
from functools import cache
from importlib import resources
from typing import Any, TypeVar

import fastavro
from pydantic import BaseModel, ValidationError

from schemas.errors import EventDecodeError, EventError, EventTooLarge
from schemas.events import (
    Attempt,
    DeadLetter,
    Request,
    Response,
    RoutedRequest,
    Spend,
    Verdict,
)

M = TypeVar("M", bound=BaseModel)

#: model class -> `.avsc` file stem
AVRO_SCHEMA_FILES: dict[type[BaseModel], str] = {
    Request: "request",
    RoutedRequest: "routed_request",
    Attempt: "attempt",
    Verdict: "verdict",
    Response: "response",
    DeadLetter: "dead_letter",
    Spend: "spend",
}


@cache
def raw_avro_schema(model: type[BaseModel]) -> dict[str, Any]:
    text = resources.files("schemas").joinpath(f"avro/{AVRO_SCHEMA_FILES[model]}.avsc").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def parsed_avro_schema(model: type[BaseModel]) -> Any:
    return fastavro.parse_schema(raw_avro_schema(model))


# A conversion plan lists, per record, the fields that need work:
# ("json", name, None) | ("record", name, plan) | ("records", name, plan).
Plan = list[tuple[str, str, Any]]


def _compile_plan(record: dict[str, Any], named: dict[str, dict[str, Any]]) -> Plan:
    named[record["name"]] = record
    plan: Plan = []
    for field in record["fields"]:
        if field.get("json"):
            plan.append(("json", field["name"], None))
            continue
        node = field["type"]
        if isinstance(node, list):
            node = next((branch for branch in node if branch != "null"), None)
        kind = "record"
        if isinstance(node, dict) and node.get("type") == "array":
            node, kind = node["items"], "records"
        if isinstance(node, str) and node.rsplit(".", 1)[-1] in named:
            node = named[node.rsplit(".", 1)[-1]]
        if isinstance(node, dict) and node.get("type") == "record":
            plan.append((kind, field["name"], _compile_plan(node, named)))
    return plan


@cache
def _plan(model: type[BaseModel]) -> Plan:
    return _compile_plan(raw_avro_schema(model), {})


def _convert(value: dict[str, Any] | None, plan: Plan, to_avro: bool) -> Any:
    if value is None:
        return None
    for kind, name, sub in plan:
        item = value.get(name)
        if kind == "json":
            value[name] = (
                json.dumps(item, separators=(",", ":")) if to_avro else json.loads(str(item))
            )
        elif item is None:
            continue
        elif kind == "record":
            value[name] = _convert(item, sub, to_avro)
        else:
            value[name] = [_convert(x, sub, to_avro) for x in item]
    return value


def encode_avro(event: BaseModel) -> bytes:
    model = type(event)
    data = _convert(event.model_dump(mode="python"), _plan(model), to_avro=True)
    buffer = io.BytesIO()
    try:
        fastavro.schemaless_writer(buffer, parsed_avro_schema(model), data)
    except (ValueError, TypeError) as exc:
        raise EventError(f"cannot encode {model.__name__} as Avro: {exc}") from exc
    return buffer.getvalue()


def decode_avro(model: type[M], payload: bytes) -> M:
    try:
        data = fastavro.schemaless_reader(io.BytesIO(payload), parsed_avro_schema(model), None)
        if not isinstance(data, dict):
            raise EventDecodeError(f"not a valid Avro {model.__name__}: not a record")
        return model.model_validate(_convert(data, _plan(model), to_avro=False))
    except EventDecodeError:
        raise
    except (ValidationError, ValueError, TypeError, EOFError, IndexError, KeyError) as exc:
        raise EventDecodeError(f"not a valid Avro {model.__name__}: {exc}") from exc


def encode_json(event: BaseModel) -> bytes:
    """Public-topic JSON: plain object, no framework metadata, nulls kept."""
    return event.model_dump_json().encode()


def decode_response(payload: bytes, response_format: str = "json") -> Response:
    """A final response as written to `<prefix>responses` in the configured format."""
    if response_format == "avro":
        return decode_avro(Response, payload)
    try:
        return Response.model_validate_json(payload)
    except ValidationError as exc:
        raise EventDecodeError(f"not a valid JSON Response: {exc}") from exc


#: how much of an unreadable request is searched for its request_id
REQUEST_ID_SEARCH_BYTES = 64 * 1024
#: a request_id longer than the contract's limit is not one to answer
MAX_REQUEST_ID_CHARS = 256


def decode_request(payload: bytes, max_bytes: int) -> Request:
    """Requests arrive as JSON by default; Avro (magic-less, schemaless) is accepted too.

    Errors name the problem and carry the request id when it can be read.
    """
    if len(payload) > max_bytes:
        raise EventTooLarge(
            f"request is {len(payload)} bytes, above worker.max_request_bytes={max_bytes}",
            request_id=request_id_in_prefix(payload[:REQUEST_ID_SEARCH_BYTES]),
        )
    if _looks_like_json(payload):
        return decode_request_json(payload)
    try:
        return decode_avro(Request, payload)
    except EventDecodeError:
        return decode_request_json(payload)


def decode_request_json(payload: bytes) -> Request:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventDecodeError(
            f"request is not valid UTF-8 JSON: {exc}",
            request_id=request_id_in_prefix(payload[:REQUEST_ID_SEARCH_BYTES]),
        ) from exc
    if not isinstance(data, dict):
        raise EventDecodeError(f"request must be a JSON object, got {type(data).__name__}")
    request_id = readable_request_id(data.get("request_id"))
    try:
        return Request.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise EventDecodeError(f"invalid request: {problems}", request_id=request_id) from exc


def _looks_like_json(payload: bytes) -> bool:
    return not payload or payload[:1] in (b"{", b" ", b"\n", b"\t", b"\r")


def readable_request_id(value: object) -> str | None:
    """`value` if a caller could be answered under it: a string of 1-256 characters."""
    if isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID_CHARS:
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


_JSON_WHITESPACE = " \t\n\r"


def _json_request_id(head: bytes) -> str | None:
    text = head.decode("utf-8", errors="replace")
    decoder = json.JSONDecoder()
    at = len(text) - len(text.lstrip(_JSON_WHITESPACE))
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
