"""Reading an inference backend's ``config_file`` and checking its integer fields."""

from __future__ import annotations

import json
from typing import Any

from ...api.errors import SessionError

__all__ = ["int_field", "load_config"]


def load_config(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise SessionError(f"config_file {path!r} cannot be read: {exc}") from exc
    try:
        import yaml
        data = yaml.safe_load(text)
    except ImportError:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SessionError(f"config_file {path!r}: PyYAML is not installed and the "
                               f"file is not JSON ({exc})") from exc
    except Exception as exc:
        raise SessionError(f"config_file {path!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SessionError(f"config_file {path!r} must hold a mapping (key: value), got "
                           f"{type(data).__name__}")
    return data


def int_field(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise SessionError(f"{name} must be an integer {rng}, got {value!r}")
    return value
