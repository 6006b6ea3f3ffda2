"""The one answer-text extraction that safety and quality share."""

from __future__ import annotations

from streams.evaluation.answer_text import answer_text_of, text_of_output


def test_text_of_output_shapes() -> None:
    assert text_of_output("plain") == "plain"
    assert text_of_output({"content": "c"}) == "c"
    assert text_of_output({"text": "t"}) == "t"
    assert text_of_output({"answer": "a"}) == "a"
    assert text_of_output({"choices": [{"message": {"role": "assistant", "content": "m"}}]}) == "m"
    assert text_of_output({"choices": [{"text": "legacy"}]}) == "legacy"
    assert (
        text_of_output({"content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]})
        == "x\ny"
    )
    assert text_of_output({"label": 3}) == '{"label": 3}'
    assert text_of_output(None) == ""
    assert answer_text_of({"label": 3}) is None
    assert answer_text_of({"content": "hi", "role": "assistant", "tool_calls": []}) == "hi"
    assert answer_text_of({"answer": "42", "sources": ["a"]}) is None  # structured data
    assert answer_text_of({"content": None}) == ""
