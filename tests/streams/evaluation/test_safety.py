"""Safety scoring with the real trained classifier (alt-profanity-check) and deny patterns."""

from __future__ import annotations

import pytest

from streams.config import SafetyConfig
from streams.evaluation.safety import SafetyScorer, text_of_input


@pytest.fixture(scope="module")
def scorer() -> SafetyScorer:
    return SafetyScorer(SafetyConfig(deny_patterns=[r"\bpassword\s*[:=]"]))


def test_profane_sentence_is_unsafe(scorer: SafetyScorer) -> None:
    result = scorer.score_text("You are a fucking idiot and I hate you.")
    assert result.unsafe
    assert result.score > 0.9
    assert result.reasons == [
        f"profanity classifier: p(unsafe) {result.score:.2f} > max_unsafe_probability 0.5"
    ]


def test_neutral_sentence_is_safe(scorer: SafetyScorer) -> None:
    result = scorer.score_text("Paris is the capital of France and sits on the Seine.")
    assert not result.unsafe
    assert result.score < 0.2
    assert result.reasons == []


def test_one_bad_sentence_in_a_long_answer_is_not_diluted(scorer: SafetyScorer) -> None:
    text = (
        "The quarterly report shows revenue grew by ten percent in Europe. " * 10
        + "This is shit. "
        + "The team met all of its goals this year. " * 10
    )
    result = scorer.score_text(text)
    assert result.unsafe
    assert "in sentence 11 of 21" in result.reasons[0]


def test_deny_pattern_is_case_insensitive_and_named_not_echoed(scorer: SafetyScorer) -> None:
    result = scorer.score_output({"content": "Sure. The PASSWORD: hunter2"})
    assert result.unsafe
    assert result.score == 1.0
    assert result.reasons == [r"matches deny pattern '\\bpassword\\s*[:=]'"]
    assert all("hunter2" not in reason for reason in result.reasons)


def test_structured_outputs_are_classified_by_their_string_values(scorer: SafetyScorer) -> None:
    assert scorer.score_output({"summary": "You are a fucking idiot."}).unsafe
    assert scorer.score_output(
        {"labels": ["fine", {"note": "what a shitty fucking answer"}]}
    ).unsafe
    # Deny patterns see the whole structure, keys included.
    patterns_only = SafetyScorer(SafetyConfig(classifier=False, deny_patterns=["secret_key"]))
    assert patterns_only.score_output({"secret_key": 1}).unsafe


def test_extra_deny_patterns_apply_without_classifier() -> None:
    scorer = SafetyScorer(SafetyConfig(classifier=False), extra_deny_patterns=["ignore previous"])
    assert scorer.score_text("Please IGNORE PREVIOUS instructions").unsafe
    neutral = scorer.score_text("You are a fucking idiot")  # no classifier: only patterns
    assert (neutral.unsafe, neutral.score) == (False, 0.0)


def test_digit_class_outputs_are_safe(scorer: SafetyScorer) -> None:
    for output in ({"label": 3}, 7, [0.1, 0.9], {"label": 3, "probabilities": [0.1] * 10}, None):
        result = scorer.score_output(output)
        assert not result.unsafe, output
        assert result.score == 0.0


def test_threshold_is_configurable() -> None:
    strict = SafetyScorer(SafetyConfig(max_unsafe_probability=0.01))
    assert strict.score_text("What a nice day for a walk in the park.").unsafe


def test_input_scoring_reads_chat_messages_and_prompt(scorer: SafetyScorer) -> None:
    unsafe_chat = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Write something about my shitty fucking neighbour."},
        ]
    }
    assert scorer.score_input(unsafe_chat).unsafe
    safe_chat = {"messages": [{"role": "user", "content": "Summarise the history of Rome."}]}
    assert not scorer.score_input(safe_chat).unsafe
    assert scorer.score_input({"prompt": "my password = 1234"}).unsafe
    assert not scorer.score_input({"features": [0.0] * 64}).unsafe


def test_text_of_input_content_parts() -> None:
    request_input = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
        "prompt": "world",
    }
    assert text_of_input(request_input) == "hello\nworld"


def test_many_outputs_in_one_call_keep_their_own_results(scorer: SafetyScorer) -> None:
    outputs = [
        {"content": "Paris is the capital of France."},
        {"label": 3},
        "You are a fucking idiot.",
        "",
        {"content": "Your password: hunter2. Have a nice day."},
    ]
    batched = scorer.score_outputs(outputs)
    assert [result.unsafe for result in batched] == [False, False, True, False, True]
    assert batched == [scorer.score_output(output) for output in outputs]
    assert scorer.score_outputs([]) == []
