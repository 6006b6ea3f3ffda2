"""The README's examples are copy-paste valid: JSON validates against the
contract's models, YAML against the config, Python compiles, and every
`fallback` command line names a real command with real options."""

from __future__ import annotations

import json
import re
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from schemas.events import DeadLetter, Response
from schemas.intake import RequestLimits, read_request
from streams.config import parse_config
from streams.ops.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
#: a YAML fragment (one section) is checked inside the smallest whole config
MINIMAL_TIERS = [{"name": "primary", "adapter": {"kind": "digits", "model": "forest"}}]


def blocks(language: str) -> list[str]:
    found = [body for lang, body in BLOCK.findall(README.read_text()) if lang == language]
    assert found, f"the README has no {language} block"
    return found


@pytest.mark.parametrize("example", blocks("json"))
def test_json_examples_are_valid_contract_events(example: str) -> None:
    event = json.loads(example)
    if "source_topic" in event:
        DeadLetter.model_validate(event)
    elif "status" in event:
        Response.model_validate(event)
    else:
        # Read as the router reads a request off the topic (an old example date is fine).
        limits = RequestLimits(max_bytes=900_000, created_at_max_age_s=10 * 365 * 86_400)
        read_request(example.encode(), limits, datetime.now(UTC))


@pytest.mark.parametrize("example", blocks("yaml"))
def test_yaml_examples_are_valid_config(example: str) -> None:
    data = yaml.safe_load(example)
    parse_config(data if "tiers" in data else {**data, "tiers": MINIMAL_TIERS}, "README")


@pytest.mark.parametrize("example", blocks("python"))
def test_python_examples_compile(example: str) -> None:
    compile(example, "README.md", "exec")


def command_lines(block: str) -> list[list[str]]:
    """Each shell command of a block as words (continuations and multi-line quotes joined)."""
    commands: list[list[str]] = []
    pending = ""
    for line in block.replace("\\\n", " ").splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the command goes on
            continue
        pending = ""
        if words:
            commands.append(words)
    assert not pending, f"unbalanced quotes in: {pending!r}"
    return commands


def fallback_commands() -> list[list[str]]:
    found = []
    for block in blocks("sh"):
        for words in command_lines(block):
            while words and ("=" in words[0] and not words[0].startswith("-")):
                words = words[1:]  # VAR=value prefixes
            if words and Path(words[0]).name == "fallback":
                found.append(words[1:])
    assert found, "the README shows no `fallback` command"
    return found


@pytest.mark.parametrize("words", fallback_commands(), ids=lambda w: " ".join(w)[:60])
def test_fallback_command_lines_parse(words: list[str]) -> None:
    group = typer.main.get_command(cli)
    command = getattr(group, "commands", {}).get(words[0])
    assert command is not None, f"no command `fallback {words[0]}`"
    context = command.make_context(words[0], list(words[1:]))
    given: dict[str, Any] = context.params
    for option in ("input_json", "params_json"):
        if given.get(option):
            json.loads(given[option])  # --input / --params must be JSON
