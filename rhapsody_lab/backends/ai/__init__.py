"""RHAPSODY's module path ``backends.ai``: the inference backends (``backends.inference``)."""

from __future__ import annotations

from typing import Any

__all__ = ["DragonVllmInferenceBackend", "VllmInferenceBackend"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from .. import inference
        return getattr(inference, name)
    raise AttributeError(f"module 'rhapsody_lab.backends.ai' has no attribute {name!r}")
