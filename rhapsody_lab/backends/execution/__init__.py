"""RHAPSODY's module path ``backends.execution``: the execution backends, by class name.

Thin re-exports of ``rhapsody_lab.backends`` (one layout, two import paths); each backend
module is imported only when its class is asked for.
"""

from __future__ import annotations

from typing import Any

from ..registry import CLASS_NAMES, backend_class

__all__ = [n for n in CLASS_NAMES if "Inference" not in n]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return backend_class(CLASS_NAMES[name])
    raise AttributeError(f"module 'rhapsody_lab.backends.execution' has no attribute {name!r}")
