"""Wire formats: Avro (fastavro) for internal topics, JSON for the public ones.

Each `.avsc` is read and parsed the first time its event is encoded or
decoded, then cached (`functools.cache`).  Fields marked `"json": true` in an
`.avsc` hold arbitrary JSON (request input, model output) as a string; the
codec converts them both ways so callers only ever see pydantic models.
"""

from __future__ import annotations

import io
import json
import re
from functools import cache
from importlib import resources
from typing import Any, TypeVar

import fastavro
from pydantic import BaseModel, ValidationError

from schemas.errors import EventDecodeError, EventError
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
            value[name] = _dump_json(item) if to_avro else json.loads(str(item))
        elif item is None:
            continue
        elif kind == "record":
            value[name] = _convert(item, sub, to_avro)
        else:
            value[name] = [_convert(x, sub, to_avro) for x in item]
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _dump_json(item: Any) -> str:
    """Compact JSON, non-ASCII kept as is: escaping it (json's default) made a
    request of 1 MB of "é" 3 MB on the internal topics, over the producer's limit."""
    text = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
    if _SURROGATE.search(text):  # a lone surrogate has no UTF-8 form: escape it
        text = json.dumps(item, separators=(",", ":"))
    return text


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
    except (
        ValidationError,
        ValueError,
        TypeError,
        EOFError,
        IndexError,
        KeyError,
        OverflowError,
        RecursionError,  # JSON fields nested deeper than the interpreter can read
    ) as exc:
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
