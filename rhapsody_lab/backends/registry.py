"""Backends by short name, imported only when asked for (runtime libraries stay unloaded)."""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from ..api.errors import SessionError

__all__ = ["BACKENDS", "backend_class", "discover_backends", "get_backend"]

#: short name -> "module:Class" (relative to rhapsody_lab.backends)
BACKENDS: dict[str, str] = {
    "concurrent": "concurrent:ConcurrentExecutionBackend",
    "dask": "dask:DaskExecutionBackend",
    "dragon": "dragon:DragonExecutionBackendV3",
    "flux": "flux:FluxExecutionBackend",
    "vllm": "inference.vllm:VllmInferenceBackend",
    "dragon_vllm": "inference.vllm:DragonVllmInferenceBackend",
}

#: public class name -> short name, for ``from rhapsody_lab.backends import X``
CLASS_NAMES: dict[str, str] = {
    "ConcurrentExecutionBackend": "concurrent",
    "DaskExecutionBackend": "dask",
    "DragonExecutionBackendV3": "dragon",
    "DragonExecutionBackend": "dragon",
    "FluxExecutionBackend": "flux",
    "VllmInferenceBackend": "vllm",
    "DragonVllmInferenceBackend": "dragon_vllm",
}


def backend_class(name: str) -> type:
    """The backend class registered as ``name`` (ImportError if its module is missing)."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise SessionError(f"unknown backend {name!r}; known backends: {sorted(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    mod = importlib.import_module(f"rhapsody_lab.backends.{module}")
    return getattr(mod, cls)


def get_backend(backend_name: str, /, *args: Any, **kwargs: Any) -> Any:
    """Create the backend registered as ``backend_name`` (await it, or let a Session start it).

    Keyword arguments go to the backend's constructor, ``name=`` included.
    """
    cls = backend_class(backend_name)
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover - a class without a signature
        params = {}
    known = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                        p.KEYWORD_ONLY)]
    if params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for key in kwargs:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise SessionError(f"get_backend({backend_name!r}): {cls.__name__} takes no "
                                   f"argument {key!r}{hint}; its arguments are: {known}")
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as exc:
        raise SessionError(f"get_backend({backend_name!r}): {exc}; {cls.__name__}'s "
                           f"arguments: {known}") from None
    return cls(*args, **kwargs)


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
