"""Backends by short name, imported only when asked for (runtime libraries stay unloaded).

``BackendRegistry`` is RHAPSODY's registry with its behaviour: ``list_backends()``,
``get_backend_class(name)`` (``ValueError`` "Backend 'x' not found. Available: [...]",
here a ``SessionError``, which is one), ``register_backend(name, cls_or_path)``; an entry
is a class or a dotted import path ``"package.module.ClassName"``, imported on first use.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, ClassVar

from ..api.errors import SessionError

__all__ = ["BACKENDS", "CLASS_NAMES", "BackendRegistry", "backend_class", "discover_backends",
           "get_backend"]

_HERE = "rhapsody_lab.backends"


class BackendRegistry:
    """Backends by short name: ``get_backend_class("dask")``, ``register_backend(...)``."""

    #: short name -> backend class, or the dotted path of one (imported when first asked)
    _backends: ClassVar[dict[str, type | str]] = {
        "concurrent": f"{_HERE}.concurrent.ConcurrentExecutionBackend",
        "dask": f"{_HERE}.dask.DaskExecutionBackend",
        "dragon": f"{_HERE}.dragon.DragonExecutionBackend",
        "dragon_v3": f"{_HERE}.dragon.DragonExecutionBackend",  # RHAPSODY's older name
        "flux": f"{_HERE}.flux.FluxExecutionBackend",
        "radical_pilot": f"{_HERE}.radical_pilot.RadicalExecutionBackend",
        "radical": f"{_HERE}.radical_pilot.RadicalExecutionBackend",  # RHAPSODY maps it
        "noop": f"{_HERE}.noop.NoopExecutionBackend",
        "orbit": f"{_HERE}.orbit.OrbitExecutionBackend",
        "vllm": f"{_HERE}.inference.vllm.VllmInferenceBackend",
        "dragon_vllm": f"{_HERE}.inference.dragon_vllm.DragonVllmInferenceBackend",
    }

    @classmethod
    def list_backends(cls) -> list[str]:
        """Every registered short name (importable here or not: see ``discover_backends``)."""
        return list(cls._backends)

    @classmethod
    def get_backend_class(cls, backend_name: str) -> type:
        """The class registered as ``backend_name``; ImportError if its module is missing."""
        backends = cls._backends
        if not isinstance(backend_name, str):
            raise SessionError(f"a backend name must be a string such as 'dask', got "
                               f"{type(backend_name).__name__} {backend_name!r}; available: "
                               f"{list(backends)}")
        if backend_name not in backends:
            close = difflib.get_close_matches(backend_name, list(backends), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SessionError(
                f"Backend {backend_name!r} not found. Available: {list(backends)}{hint} "
                "(add one with BackendRegistry.register_backend(name, cls))")
        value = backends[backend_name]
        if not isinstance(value, str):
            return value
        module, _, name = value.rpartition(".")
        try:
            found = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ImportError(f"backend {backend_name!r} ({value}) cannot be imported here: "
                              f"{exc}") from exc
        if not value.startswith(f"{_HERE}."):
            backends[backend_name] = found  # a user's entry: imported once, like RHAPSODY
        return found

    @classmethod
    def register_backend(cls, name: str, backend_class: type | str) -> None:
        """Register ``backend_class`` (a class or ``"package.module.ClassName"``) as ``name``."""
        if not isinstance(name, str) or not name:
            raise SessionError(f"register_backend: name must be a non-empty string, got "
                               f"{name!r}")
        if isinstance(backend_class, str):
            if "." not in backend_class.strip("."):
                raise SessionError(
                    f"register_backend({name!r}): backend_class {backend_class!r} is not a "
                    "dotted import path; write 'package.module.ClassName' or pass the class")
        elif not isinstance(backend_class, type):
            raise SessionError(f"register_backend({name!r}): backend_class must be a class "
                               f"or 'package.module.ClassName', got {backend_class!r}")
        cls._backends[name] = backend_class


#: the registry's table (``BackendRegistry._backends``), kept under its former name
BACKENDS = BackendRegistry._backends

#: public class name -> its registered short name, for ``from rhapsody_lab.backends import X``
CLASS_NAMES: dict[str, str] = {
    "ConcurrentExecutionBackend": "concurrent",
    "DaskExecutionBackend": "dask",
    "DragonExecutionBackend": "dragon",
    "DragonExecutionBackendV3": "dragon",
    "FluxExecutionBackend": "flux",
    "RadicalExecutionBackend": "radical_pilot",
    "NoopExecutionBackend": "noop",
    "OrbitExecutionBackend": "orbit",
    "VllmInferenceBackend": "vllm",
    "DragonVllmInferenceBackend": "dragon_vllm",
}


def backend_class(name: str) -> type:
    """The backend class registered as ``name`` (ImportError if its module is missing)."""
    return BackendRegistry.get_backend_class(name)


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
    for name in BackendRegistry.list_backends():
        try:
            backend_class(name)
            found[name] = True
        except (ImportError, AttributeError, ValueError):
            found[name] = False
    return found
