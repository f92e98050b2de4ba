"""Execution and inference backends; each is imported only when first used."""

from __future__ import annotations

from typing import Any

from ..api.backend import BaseBackend
from ..api.session import Session
from ..api.state_map import StateMapper, TasksMainStates
from .registry import BACKENDS, CLASS_NAMES, backend_class, discover_backends, get_backend

__all__ = ["BaseBackend", "BACKENDS", "Session", "StateMapper", "TasksMainStates", "get_backend",
           "discover_backends", *CLASS_NAMES]


def __getattr__(name: str) -> Any:
    if name in CLASS_NAMES:
        return backend_class(CLASS_NAMES[name])
    raise AttributeError(f"module 'rhapsody_lab.backends' has no attribute {name!r}")
