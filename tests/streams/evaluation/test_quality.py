"""The pluggable quality evaluators."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.errors import ConfigError
from schemas.events import Trigger
from streams.config import QualityCheckConfig
from streams.evaluation import quality
from streams.evaluation.quality import QualityFailure, prepare_quality_checks, run_quality_checks

NON_EMPTY = QualityCheckConfig(check="non_empty")
JSON = QualityCheckConfig(check="json")
ANSWER_SCHEMA = QualityCheckConfig(
    check="json_schema",
    json_schema={
        "type": "object",
        "required": ["answer", "sources"],
        "properties": {
            "answer": {"type": "string"},
            "sources": {"type": "array", "items": {"type": "string"}},
        },
    },
)


def callable_check(name: str, min_score: float = 0.5) -> QualityCheckConfig:
    return QualityCheckConfig(
        check="callable",
        callable=f"tests.streams.evaluation.sample_quality:{name}",
        min_score=min_score,
    )


def triggers(failures: list[QualityFailure]) -> list[Trigger]:
    return [failure.trigger for failure in failures]


@pytest.mark.parametrize(
    "output",
    [
        None,
        "",
        "   \n",
        {},
        [],
        {"content": ""},
        {"content": None},
        {"content": "", "role": "assistant"},
        {"choices": [{"message": {"content": " "}}]},
    ],
)
def test_non_empty_rejects_empty_outputs(output: Any) -> None:
    assert run_quality_checks([NON_EMPTY], output, {}) == [
        QualityFailure(Trigger.INVALID_OUTPUT, "output is empty")
    ]


@pytest.mark.parametrize("output", ["hi", {"content": "hi"}, {"label": 0}, 0, [0.0], False])
def test_non_empty_accepts_answers(output: Any) -> None:
    assert run_quality_checks([NON_EMPTY], output, {}) == []


@pytest.mark.parametrize(
    "output",
    [
        '{"a": 1}',
        "[1, 2]",
        {"content": '{"a": 1}'},
        {"content": '{"a": 1}', "role": "assistant"},
        '```json\n{"a": 1}\n```',
        {"a": 1},
        3,
    ],
)
def test_json_accepts_json(output: Any) -> None:
    assert run_quality_checks([JSON], output, {}) == []


def test_json_rejects_text_that_is_not_json() -> None:
    [failure] = run_quality_checks([JSON], {"content": "Sure! {a: 1}"}, {})
    assert failure.trigger is Trigger.INVALID_OUTPUT
    assert failure.reason == "output is not JSON: Expecting value at line 1 column 1"
    assert triggers(run_quality_checks([JSON], None, {})) == [Trigger.INVALID_OUTPUT]


def test_json_schema_accepts_structured_and_text_outputs() -> None:
    good = {"answer": "42", "sources": ["hitchhiker"]}
    assert run_quality_checks([ANSWER_SCHEMA], good, {}) == []
    assert run_quality_checks([ANSWER_SCHEMA], '{"answer": "42", "sources": []}', {}) == []


def test_json_schema_reason_names_the_failing_path() -> None:
    [failure] = run_quality_checks([ANSWER_SCHEMA], {"answer": "42", "sources": ["a", 7]}, {})
    assert failure.trigger is Trigger.INVALID_OUTPUT
    assert (
        failure.reason
        == "output does not match the schema at $.sources[1]: 7 is not of type 'string'"
    )
    [missing] = run_quality_checks([ANSWER_SCHEMA], {"content": '{"answer": "42"}'}, {})
    assert "at $: 'sources' is a required property" in missing.reason
    [not_json] = run_quality_checks([ANSWER_SCHEMA], "forty-two", {})
    assert not_json.reason.startswith("output is not JSON")


def test_invalid_schema_is_a_config_error() -> None:
    bad = QualityCheckConfig(check="json_schema", json_schema={"type": "no-such-type"})
    with pytest.raises(ConfigError, match="not a valid schema"):
        prepare_quality_checks([bad])


def test_callable_scores_and_reasons_become_a_hallucination() -> None:
    check = callable_check("grounded_in_prompt", min_score=0.8)
    request_input = {"prompt": "the sky is blue"}
    assert run_quality_checks([check], "the sky is blue", request_input) == []
    [failure] = run_quality_checks([check], "the sky is green cheese", request_input)
    assert failure == QualityFailure(
        Trigger.HALLUCINATION,
        "tests.streams.evaluation.sample_quality:grounded_in_prompt: score 0.6 < min_score 0.8: "
        "not in the prompt: cheese, green",
        0.6,
    )


def test_callable_returning_a_float() -> None:
    [failure] = run_quality_checks([callable_check("constant_score")], "x", {})
    assert (failure.trigger, failure.score) == (Trigger.HALLUCINATION, 0.25)
    assert failure.reason.endswith("no reasons given")
    assert run_quality_checks([callable_check("constant_score", min_score=0.2)], "x", {}) == []


def test_callable_raising_is_invalid_output_without_the_message() -> None:
    [failure] = run_quality_checks([callable_check("broken_detector")], "x", {})
    assert failure == QualityFailure(
        Trigger.INVALID_OUTPUT,
        "quality callable tests.streams.evaluation.sample_quality:broken_detector raised KeyError",
    )


def test_callable_with_a_wrong_return_type_is_invalid_output() -> None:
    [failure] = run_quality_checks([callable_check("wrong_return_type")], "x", {})
    assert failure.trigger is Trigger.INVALID_OUTPUT
    assert "expected a score or (score, reasons)" in failure.reason


def test_callable_is_imported_once(monkeypatch: pytest.MonkeyPatch) -> None:
    imported: list[str] = []
    real_import = quality.importlib.import_module

    def counting_import(name: str) -> Any:
        imported.append(name)
        return real_import(name)

    quality.load_quality_callable.cache_clear()
    monkeypatch.setattr(quality.importlib, "import_module", counting_import)
    for _ in range(3):
        run_quality_checks([callable_check("constant_score")], "x", {})
    assert imported == ["tests.streams.evaluation.sample_quality"]


def test_unknown_callable_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot import"):
        prepare_quality_checks([QualityCheckConfig(check="callable", callable="no_such_module:f")])
    with pytest.raises(ConfigError, match="has no function"):
        prepare_quality_checks([callable_check("no_such_function")])


def test_all_failures_are_reported() -> None:
    failures = run_quality_checks([NON_EMPTY, JSON, ANSWER_SCHEMA], "", {})
    assert triggers(failures) == [Trigger.INVALID_OUTPUT] * 3
