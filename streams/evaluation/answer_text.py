"""The text of a model's answer: the one extraction safety and quality both judge.

A textual answer comes in several shapes (a plain string, a chat message, an
OpenAI body, content parts); structured data (a class label, a JSON object
with its own keys) has no answer text and is judged whole.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["answer_text_of", "text_of_content", "text_of_output"]

# Keys under which the common output shapes carry their text answer, and the
# metadata keys that may sit beside it in a chat message. A dict with any other
# key (`{"answer": "42", "sources": [...]}`) is structured data, judged whole.
_TEXT_KEYS = ("content", "text", "answer")
_ENVELOPE_KEYS = frozenset(
    {
        "role",
        "name",
        "type",
        "tool_calls",
        "function_call",
        "refusal",
        "annotations",
        "finish_reason",
    }
)


def answer_text_of(output: Any) -> str | None:
    """The text of a textual answer, or None when the output is structured data.

    Recognises a plain string; a message `{"content" | "text" | "answer": str}`
    whose other keys are only message metadata (role, tool_calls, ...), which is
    what the chat adapter returns; an OpenAI chat/completions body
    (`choices[0].message.content` / `choices[0].text`); and content given as a
    list of parts (`[{"type": "text", "text": ...}]`).
    """
    if isinstance(output, str):
        return output
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    if not isinstance(output, dict):
        return None
    choices = output.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        message = first.get("message")
        if isinstance(message, dict) and "content" in message:
            return text_of_content(message["content"])
        if "text" in first:
            return text_of_content(first["text"])
    for key in _TEXT_KEYS:
        if key in output and output.keys() - {key} <= _ENVELOPE_KEYS:
            return text_of_content(output[key])
    return None


def text_of_content(content: Any) -> str | None:
    """A message's `content`: a string, or the text of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        texts = [part for part in parts if isinstance(part, str)]
        if texts or not content:
            return "\n".join(texts)
    return None


def text_of_output(output: Any) -> str:
    """The text to judge in a model output; structured outputs as compact JSON."""
    if output is None:
        return ""
    text = answer_text_of(output)
    if text is not None:
        return text
    return json.dumps(output, ensure_ascii=False, default=str, separators=(", ", ": "))
