"""Pluggable quality evaluators, configured per tier by name.

    non_empty    no answer: None, blank text, empty container, empty `content`
    json         the answer's text parses as JSON
    json_schema  the answer (structured, or its text parsed as JSON) matches a schema
    callable     a user function `module:function` scores the answer; the hook for
                 hallucination detectors, graders, reference checks

Every check runs and every failure is reported, so a verdict lists all that
was wrong. A failing check blames the *answer* (INVALID_OUTPUT, HALLUCINATION).
A misconfigured check (bad schema, callable that cannot be imported) is the
operator's fault, not the model's: it raises `ConfigError`; call
`prepare_quality_checks` at start-up so that happens before any request.

Callables are called synchronously on the caller's thread; a slow detector
should be run by the caller in an executor.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from schemas.errors import ConfigError
from schemas.events import Trigger
from streams.config import QualityCheckConfig
from streams.evaluation.answer_text import answer_text_of

__all__ = [
    "QualityCallable",
    "QualityFailure",
    "load_quality_callable",
    "prepare_quality_checks",
    "run_quality_checks",
]

QualityCallable = Callable[[Any, dict[str, Any]], Any]

# LLMs often wrap JSON in a Markdown fence; the JSON inside is still the answer.
_CODE_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)
# Schema messages can quote the whole offending value; keep reasons short.
_MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class QualityFailure:
    trigger: Trigger
    reason: str
    score: float | None = None


def run_quality_checks(
    checks: Sequence[QualityCheckConfig], output: Any, request_input: dict[str, Any]
) -> list[QualityFailure]:
    """Every failure of `output` against `checks`; an empty list means it passed."""
    failures: list[QualityFailure] = []
    for check in checks:
        failure = _run_check(check, output, request_input)
        if failure is not None:
            failures.append(failure)
    return failures


def prepare_quality_checks(checks: Sequence[QualityCheckConfig]) -> None:
    """Import callables and compile schemas now; raises ConfigError naming what is wrong."""
    for check in checks:
        if check.check == "json_schema" and check.json_schema is not None:
            _schema_validator(_schema_key(check.json_schema))
        if check.check == "callable" and check.callable is not None:
            load_quality_callable(check.callable)


def _run_check(
    check: QualityCheckConfig, output: Any, request_input: dict[str, Any]
) -> QualityFailure | None:
    if check.check == "non_empty":
        if _is_empty(output):
            return QualityFailure(Trigger.INVALID_OUTPUT, "output is empty")
        return None
    if check.check == "json":
        try:
            _json_value_of(output)
        except ValueError as exc:
            return QualityFailure(Trigger.INVALID_OUTPUT, _shorten(f"output is not JSON: {exc}"))
        return None
    if check.check == "json_schema":
        assert check.json_schema is not None  # the config validator guarantees it
        return _check_schema(check.json_schema, output)
    assert check.callable is not None  # the config validator guarantees it
    return _check_callable(check.callable, check.min_score, output, request_input)


def _is_empty(output: Any) -> bool:
    if output is None:
        return True
    text = answer_text_of(output)
    if text is not None:
        return not text.strip()
    if isinstance(output, dict | list | tuple | set):
        return len(output) == 0
    return False


def _json_value_of(output: Any) -> Any:
    """The JSON value an output stands for: structured outputs as they are, text parsed.

    Raises ValueError with the parser's message when the text is not JSON.
    """
    if output is None:
        raise ValueError("there is no output")
    text = answer_text_of(output)
    if text is None:
        return output  # already structured data (dict, list, number, bool)
    fenced = _CODE_FENCE.match(text)
    if fenced:
        text = fenced.group("body")
    if not text.strip():
        raise ValueError("the text is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _schema_key(schema: dict[str, Any]) -> str:
    # Config models are frozen but dicts are not hashable: key the cache by
    # canonical JSON, so one schema is compiled once per process.
    return json.dumps(schema, sort_keys=True)


@functools.cache
def _schema_validator(schema_json: str) -> Validator:
    schema = json.loads(schema_json)
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(
            f"quality check json_schema is not a valid schema: {exc.message}"
        ) from None
    validator: Validator = validator_class(schema)
    return validator


def _check_schema(schema: dict[str, Any], output: Any) -> QualityFailure | None:
    validator = _schema_validator(_schema_key(schema))
    try:
        value = _json_value_of(output)
    except ValueError as exc:
        return QualityFailure(Trigger.INVALID_OUTPUT, _shorten(f"output is not JSON: {exc}"))
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    return QualityFailure(
        Trigger.INVALID_OUTPUT,
        _shorten(f"output does not match the schema at {error.json_path}: {error.message}"),
    )


@functools.cache
def load_quality_callable(spec: str) -> QualityCallable:
    """Import `module:function` once per process."""
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"quality callable {spec}: cannot import {module_name}: {exc}") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"quality callable {spec}: {module_name} has no function {function_name}")
    quality_callable: QualityCallable = function
    return quality_callable


def _check_callable(
    spec: str, min_score: float, output: Any, request_input: dict[str, Any]
) -> QualityFailure | None:
    function = load_quality_callable(spec)
    try:
        result = function(output, request_input)
    except Exception as exc:
        # The detector could not judge this answer (often because the answer
        # is not what it expects): reject it as invalid, naming the error type
        # only, since the message may quote the answer.
        return QualityFailure(
            Trigger.INVALID_OUTPUT, f"quality callable {spec} raised {type(exc).__name__}"
        )
    try:
        score, reasons = _score_and_reasons(result)
    except (TypeError, ValueError) as exc:
        return QualityFailure(Trigger.INVALID_OUTPUT, f"quality callable {spec}: {exc}")
    if score >= min_score:
        return None
    detail = "; ".join(reasons) if reasons else "no reasons given"
    return QualityFailure(
        Trigger.HALLUCINATION,
        _shorten(f"{spec}: score {score:.3g} < min_score {min_score}: {detail}"),
        score,
    )


def _score_and_reasons(result: Any) -> tuple[float, list[str]]:
    """A callable returns a score, or (score, reasons) with reasons a string or a list."""
    if isinstance(result, tuple) and len(result) == 2:
        raw_score, raw_reasons = result
    else:
        raw_score, raw_reasons = result, []
    if not isinstance(raw_score, numbers.Real):  # numpy floats too
        raise TypeError(f"returned {type(result).__name__}, expected a score or (score, reasons)")
    score = float(raw_score)
    if not math.isfinite(score):
        raise ValueError(f"returned a score of {score}")
    if isinstance(raw_reasons, str):
        reasons = [raw_reasons]
    elif isinstance(raw_reasons, list | tuple):
        reasons = [str(reason) for reason in raw_reasons]
    else:
        raise TypeError(f"returned reasons of type {type(raw_reasons).__name__}, expected a list")
    return score, reasons


def _shorten(reason: str) -> str:
    if len(reason) <= _MAX_REASON_CHARS:
        return reason
    return reason[: _MAX_REASON_CHARS - 1] + "…"
