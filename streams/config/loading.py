"""Reading the config file: YAML in, a validated `FallbackConfig` or a `ConfigError`
whose message names each offending field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schemas.errors import ConfigError
from streams.config.models import FallbackConfig


def _field_path(loc: tuple[Any, ...], data: Any) -> str:
    """`tiers[1](backup).accept.min_confidence` from pydantic's location tuple."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    label += f"({node['name']})"
            parts.append(label)
            continue
        if isinstance(node, dict):
            node = node.get(item)
        if item in {"digits", "python", "openai_chat", "open_inference"}:
            continue  # discriminator tag pydantic inserts into the path
        parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<root>"


def parse_config(data: Any, source: str = "<config>") -> FallbackConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return FallbackConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = _field_path(tuple(err["loc"]), data)
            got = f" (got {err['input']!r})" if err["type"] != "missing" and "input" in err else ""
            if err["type"] == "extra_forbidden":
                lines.append(f"{where}: unknown key")
            else:
                lines.append(f"{where}: {err['msg']}{got}")
        raise ConfigError(f"{source}: invalid configuration\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path) -> FallbackConfig:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {file}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    return parse_config(data, str(file))
