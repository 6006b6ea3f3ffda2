"""The .avsc files and the pydantic models must describe the same events."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from enum import Enum
from typing import Any

import pytest
from pydantic import BaseModel

from schemas.codec import AVRO_SCHEMA_FILES, raw_avro_schema


def _strip_null(avro_type: Any) -> tuple[Any, bool]:
    if isinstance(avro_type, list):
        rest = [t for t in avro_type if t != "null"]
        assert len(rest) == 1, avro_type
        return rest[0], "null" in avro_type
    return avro_type, False


def _check(annotation: Any, avro_type: Any, field: dict[str, Any], where: str) -> None:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        avro_inner, nullable = _strip_null(avro_type)
        assert nullable, f"{where}: optional in pydantic but not nullable in Avro"
        _check(inner[0], avro_inner, field, where)
        return
    assert not isinstance(avro_type, list), f"{where}: nullable in Avro but required in pydantic"
    if annotation is Any or origin is dict:
        assert avro_type == "string" and field.get("json"), (
            f"{where}: JSON field must be string+json"
        )
    elif origin is list:
        assert avro_type["type"] == "array", where
        _check(typing.get_args(annotation)[0], avro_type["items"], {}, where + "[]")
    elif origin is typing.Literal or (
        isinstance(annotation, type) and issubclass(annotation, Enum)
    ):
        assert avro_type == "string", where
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        assert avro_type["type"] == "record" and avro_type["name"] == annotation.__name__, where
        _compare(annotation, avro_type, where)
    else:
        expected = {str: "string", int: "long", float: "double", bool: "boolean"}.get(annotation)
        if annotation is datetime:
            assert avro_type == {"type": "long", "logicalType": "timestamp-micros"}, where
        else:
            assert avro_type == expected, f"{where}: {annotation} vs {avro_type}"


def _compare(model: type[BaseModel], record: dict[str, Any], where: str) -> None:
    avro_fields = {f["name"]: f for f in record["fields"]}
    assert list(avro_fields) == list(model.model_fields), f"{where}: field names or order differ"
    for name, info in model.model_fields.items():
        _check(info.annotation, avro_fields[name]["type"], avro_fields[name], f"{where}.{name}")


@pytest.mark.parametrize("model", list(AVRO_SCHEMA_FILES), ids=lambda m: m.__name__)
def test_avro_schema_matches_pydantic_model(model: type[BaseModel]) -> None:
    _compare(model, raw_avro_schema(model), model.__name__)
