"""Execution and inference backends; each is imported only when first used."""

from __future__ import annotations

from typing import Any

from ..api.backend import BaseBackend
from .registry import BACKENDS, BackendRegistry, backend_class, discover_backends, get_backend

#: public class name -> its registered short name, for ``from rhapsody_lab.backends import X``
CLASS_NAMES: dict[str, str] = {
    "ConcurrentExecutionBackend": "concurrent",
    "DaskExecutionBackend": "dask",
    "DragonExecutionBackend": "dragon",
    "DragonExecutionBackendV3": "dragon",
    "NoopExecutionBackend": "noop",
    "VllmInferenceBackend": "vllm",
    "DragonVllmInferenceBackend": "dragon_vllm",
}

__all__ = ["BACKENDS", "BackendRegistry", "BaseBackend", "discover_backends", "get_backend",
           *CLASS_NAMES]


def __getattr__(name: str) -> Any:
    if name in CLASS_NAMES:
        return backend_class(CLASS_NAMES[name])
    raise AttributeError(f"module 'rhapsody_lab.backends' has no attribute {name!r}")
