"""Execution and inference backends; each is imported only when first used."""

from __future__ import annotations

from typing import Any

from ..api.session import Session
from ..api.state_map import StateMapper, TasksMainStates
from .base import BaseBackend
from .registry import (
    BACKENDS,
    CLASS_NAMES,
    BackendRegistry,
    backend_class,
    discover_backends,
    get_backend,
)

__all__ = ["BACKENDS", "BackendRegistry", "BaseBackend", "Session", "StateMapper",
           "TasksMainStates", "discover_backends", "get_backend", *CLASS_NAMES]


def __getattr__(name: str) -> Any:
    if name in CLASS_NAMES:
        return backend_class(CLASS_NAMES[name])
    raise AttributeError(f"module 'rhapsody_lab.backends' has no attribute {name!r}")
