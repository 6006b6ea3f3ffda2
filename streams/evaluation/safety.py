"""Safety evaluation of model outputs and of request inputs.

Two signals, either of which makes a text unsafe:
- a trained classifier, `alt-profanity-check` (TF-IDF + calibrated linear SVM,
  shipped with its model on PyPI): `predict_prob` gives P(profane);
- deny patterns: case-insensitive regular expressions from the config.

The classifier scores each sentence and the text takes the highest score: on a
whole paragraph the TF-IDF features of one abusive sentence are diluted by the
rest (a 20-sentence business text with one "This is shit." scores 0.09 as a
whole, 1.00 per sentence). All sentences go in one `predict_prob` call, and
sklearn's fixed per-call overhead dominates, so this costs about the same as
scoring the whole text: measured here, 6-11 ms per call for one sentence or
five, ~15 ms for a 200-sentence answer, and the same ~7 ms for 50 texts in one
call. `score_outputs` exploits that: an evaluator holding many answers at once
pays for one call. Outputs without letters (`{"label": 3}`) skip the classifier.

That is CPU time on the caller's thread, mostly Python (sklearn input checks)
holding the GIL: an asyncio caller should run `score_*` in an executor, and
batching, not more threads, is what raises throughput. The scorer holds no
mutable state, so it is safe to share between threads.

Reasons name the pattern or the sentence number, never the text itself: the
reasons travel in verdicts to ClickHouse, and the text may be what is unsafe.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.config import SafetyConfig
from streams.evaluation.answer_text import answer_text_of, text_of_content, text_of_output

__all__ = ["SafetyResult", "SafetyScorer", "text_of_input"]

# Sentence ends or line breaks; good enough to keep one bad sentence from
# being drowned by its neighbours.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?;])\s+|\n+")
# Beyond this many sentences, neighbours are merged so one call stays one batch
# of bounded size whatever the output length.
_MAX_SEGMENTS = 64


@dataclass(frozen=True)
class SafetyResult:
    unsafe: bool
    score: float  # probability the text is unsafe, 0..1 (1.0 on a deny-pattern match)
    reasons: list[str] = field(default_factory=list)


def text_of_input(request_input: dict[str, Any]) -> str:
    """The caller-written text of a request input: chat `messages[].content` and `prompt`.

    Structured inputs (`features` and the like) have no text and yield "".
    """
    texts: list[str] = []
    messages = request_input.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                text = text_of_content(message.get("content"))
                if text:
                    texts.append(text)
    prompt = request_input.get("prompt")
    if isinstance(prompt, str):
        texts.append(prompt)
    elif isinstance(prompt, list):  # completions API accepts a list of prompts
        texts.extend(item for item in prompt if isinstance(item, str))
    return "\n".join(texts)


def _strings_in(value: Any) -> list[str]:
    """The string values inside a JSON-like structure, depth first."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings_in(item)]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _strings_in(item)]
    return []


def _segments(text: str) -> list[str]:
    sentences = [part for part in _SENTENCE_BREAK.split(text) if part and part.strip()]
    if len(sentences) <= _MAX_SEGMENTS:
        return sentences
    per_segment = -(-len(sentences) // _MAX_SEGMENTS)  # ceiling division
    return [
        " ".join(sentences[start : start + per_segment])
        for start in range(0, len(sentences), per_segment)
    ]


class SafetyScorer:
    """Scores texts with the profanity classifier (when `config.classifier`) and deny patterns.

    Loading the classifier imports scikit-learn and unpickles its model (2-4 s
    once per process); it happens here, at construction, not on the first request.
    """

    def __init__(self, config: SafetyConfig, extra_deny_patterns: Sequence[str] = ()) -> None:
        self._config = config
        self._deny_patterns = [
            re.compile(pattern, re.IGNORECASE)
            for pattern in [*config.deny_patterns, *extra_deny_patterns]
        ]
        self._predict_prob: Callable[[list[str]], Sequence[float]] | None = None
        if config.classifier:
            from profanity_check import predict_prob  # heavy import: only when used

            self._predict_prob = predict_prob

    def score_text(self, text: str) -> SafetyResult:
        return self._score_many([(text, text)])[0]

    def score_output(self, output: Any) -> SafetyResult:
        return self._score_many([_judged_texts_of_output(output)])[0]

    def score_outputs(self, outputs: Sequence[Any]) -> list[SafetyResult]:
        """Many outputs in one classifier call: about the cost of one (see the module doc)."""
        return self._score_many([_judged_texts_of_output(output) for output in outputs])

    def score_input(self, request_input: dict[str, Any]) -> SafetyResult:
        return self.score_text(text_of_input(request_input))

    def _score_many(self, judged: Sequence[tuple[str, str]]) -> list[SafetyResult]:
        """Each (text for the deny patterns, text for the classifier) -> its result."""
        classified = self._classify_many([classifier_text for _, classifier_text in judged])
        results = []
        for (pattern_text, _), (probability, worst_segment, segment_count) in zip(
            judged, classified, strict=True
        ):
            reasons = [
                f"matches deny pattern {pattern.pattern!r}"
                for pattern in self._deny_patterns
                if pattern.search(pattern_text)
            ]
            score = 1.0 if reasons else 0.0
            if probability > self._config.max_unsafe_probability:
                where = (
                    f" in sentence {worst_segment + 1} of {segment_count}"
                    if segment_count > 1
                    else ""
                )
                reasons.append(
                    f"profanity classifier: p(unsafe) {probability:.2f}{where} > "
                    f"max_unsafe_probability {self._config.max_unsafe_probability}"
                )
            results.append(
                SafetyResult(unsafe=bool(reasons), score=max(score, probability), reasons=reasons)
            )
        return results

    def _classify_many(self, texts: Sequence[str]) -> list[tuple[float, int, int]]:
        """Per text: (top P(unsafe) over its sentences, that sentence's index, sentence count)."""
        nothing = (0.0, 0, 0)
        if self._predict_prob is None:
            return [nothing for _ in texts]
        # No letters, no words to judge: class labels, numbers and empty
        # answers are safe, and skipping them saves the classifier call.
        segments_per_text = [
            _segments(text) if any(character.isalpha() for character in text) else []
            for text in texts
        ]
        all_segments = [segment for segments in segments_per_text for segment in segments]
        if not all_segments:
            return [nothing for _ in texts]
        probabilities = [float(p) for p in self._predict_prob(all_segments)]
        classified = []
        offset = 0
        for segments in segments_per_text:
            own = probabilities[offset : offset + len(segments)]
            offset += len(segments)
            if not own:
                classified.append(nothing)
                continue
            worst = max(range(len(own)), key=own.__getitem__)
            classified.append((own[worst], worst, len(own)))
        return classified


def _judged_texts_of_output(output: Any) -> tuple[str, str]:
    """(text for the deny patterns, text for the classifier) of a model output.

    Structured output (a class label, a JSON object): deny patterns see all of
    it, the classifier only its string values. Keys like "label" are the
    output's schema, not something the model said.
    """
    text = text_of_output(output)
    if output is None or answer_text_of(output) is not None:
        return text, text
    return text, "\n".join(_strings_in(output))
