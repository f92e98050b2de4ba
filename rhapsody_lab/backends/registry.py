"""Backends by short name, imported only when asked for (runtime libraries stay unloaded)."""

from __future__ import annotations

import importlib
from typing import Any

from ..api.errors import SessionError

__all__ = ["BACKENDS", "backend_class", "discover_backends", "get_backend"]

#: short name -> "module:Class" (relative to rhapsody_lab.backends)
BACKENDS: dict[str, str] = {
    "concurrent": "concurrent:ConcurrentExecutionBackend",
    "dask": "dask:DaskExecutionBackend",
    "dragon": "dragon:DragonExecutionBackendV3",
    "vllm": "inference.vllm:VllmInferenceBackend",
    "dragon_vllm": "inference.vllm:DragonVllmInferenceBackend",
}

#: public class name -> short name, for ``from rhapsody_lab.backends import X``
CLASS_NAMES: dict[str, str] = {
    "ConcurrentExecutionBackend": "concurrent",
    "DaskExecutionBackend": "dask",
    "DragonExecutionBackendV3": "dragon",
    "DragonExecutionBackend": "dragon",
    "VllmInferenceBackend": "vllm",
    "DragonVllmInferenceBackend": "dragon_vllm",
}


def backend_class(name: str) -> type:
    """The backend class registered as ``name`` (ImportError if its module is missing)."""
    if name not in BACKENDS:
        raise SessionError(f"unknown backend {name!r}; known backends: {sorted(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    mod = importlib.import_module(f"rhapsody_lab.backends.{module}")
    return getattr(mod, cls)


def get_backend(backend_name: str, /, *args: Any, **kwargs: Any) -> Any:
    """Create the backend registered as ``backend_name`` (await it, or let a Session start it).

    Keyword arguments go to the backend's constructor, ``name=`` included.
    """
    return backend_class(backend_name)(*args, **kwargs)


def discover_backends() -> dict[str, bool]:
    """Which registered backends can be imported here."""
    found = {}
    for name in BACKENDS:
        try:
            backend_class(name)
            found[name] = True
        except (ImportError, AttributeError):
            found[name] = False
    return found
