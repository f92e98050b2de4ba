"""Execution backends at RHAPSODY's import path (``rhapsody.backends.execution``).

The same classes as ``rhapsody_lab.backends``; each is imported when first asked for.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConcurrentExecutionBackend", "DaskExecutionBackend", "DragonExecutionBackend",
           "NoopExecutionBackend"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from .. import CLASS_NAMES, backend_class
        return backend_class(CLASS_NAMES[name])
    raise AttributeError(f"module 'rhapsody_lab.backends.execution' has no attribute {name!r}")
