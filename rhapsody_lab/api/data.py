"""A session's data backends (a Redis server, a Dragon DDict), by name.

The engine never imports a backend: a data backend is recognised by its shape
(``is_data_backend``), the small protocol of ``rhapsody_lab.backends.data.DataBackend``
(and of RHAPSODY's): ``name``, ``state``, ``endpoints``, ``await start()``, ``await
ready()``, ``await shutdown()``, and no ``submit_tasks``. Such a backend runs no tasks: the
session starts it (if not yet started), keeps it in ``session.data_backends`` and shuts it
down on ``close()``, after the task backends.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from .errors import SessionError

__all__ = ["DataBackendLike", "DataBackends", "is_data_backend"]

_OWNER = "_rhapsody_lab_session"  # on a data backend: a weak reference to its session


class DataBackendLike(Protocol):
    """What the session needs of a data backend (``state.name`` is read when present)."""

    @property
    def name(self) -> str: ...
    @property
    def endpoints(self) -> list: ...
    async def start(self, wait: bool = True) -> Any: ...
    async def ready(self) -> bool: ...
    async def shutdown(self) -> Any: ...


def is_data_backend(obj: Any) -> bool:
    """``obj`` is a data backend instance (checked on its class: ``endpoints`` may raise)."""
    cls = type(obj)
    return (not isinstance(obj, type) and not hasattr(cls, "submit_tasks")
            and hasattr(cls, "endpoints")
            and all(callable(getattr(cls, m, None)) for m in ("start", "ready", "shutdown")))


def _state(backend: Any) -> str:
    state = getattr(backend, "state", None)
    return str(getattr(state, "name", state))


class DataBackends(Mapping[str, DataBackendLike]):
    """Name -> data backend of one session; ``start_all()`` and ``shutdown_all()``."""

    def __init__(self) -> None:
        self._by_name: dict[str, DataBackendLike] = {}

    def add(self, backend: DataBackendLike, session: Any) -> None:
        """Register ``backend`` with ``session`` (names are unique among all its backends).

        Its files go to ``<work_dir>/<session uid>.data.<name>`` unless it was given a
        ``work_dir``.
        """
        name = backend.name
        if not isinstance(name, str) or not name:
            raise SessionError(f"a data backend needs a non-empty name, got {name!r}")
        if self._by_name.get(name) is backend:
            return
        if name in self._by_name or name in session.backends:
            raise SessionError(f"a backend named '{name}' is already registered; give the "
                               "second one another name=")
        if _state(backend) in ("FAILED", "SHUTDOWN"):
            raise SessionError(f"data backend '{name}' is {_state(backend)} and cannot be "
                               "started again; create a new one")
        owner = getattr(backend, _OWNER, lambda: None)()
        if owner is not None and owner is not session and not owner.closed:
            raise SessionError(f"data backend '{name}' belongs to session {owner.uid}, which "
                               "shuts it down on close(); close that session first or create "
                               "another backend")
        setattr(backend, _OWNER, weakref.ref(session))
        use = getattr(backend, "_use_session_dir", None)
        if use is not None:  # its files go under the session's work_dir unless set
            use(os.path.join(session.work_dir, f"{session.uid}.data.{name}"))
        self._by_name[name] = backend

    async def start_all(self) -> None:
        """Start those never started (concurrently); a started one is left as it is."""
        todo = [b.start() for b in self._by_name.values() if _state(b) == "CREATED"]
        if todo:
            await asyncio.gather(*todo)

    async def shutdown_all(self) -> list[BaseException]:
        """Shut every one down (concurrently); the errors, after all were tried."""
        results = await asyncio.gather(*(b.shutdown() for b in self._by_name.values()),
                                       return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]

    def __getitem__(self, name: str) -> DataBackendLike:
        try:
            return self._by_name[name]
        except KeyError:
            raise SessionError(f"no data backend named {name!r}; data backends: "
                               f"{sorted(self._by_name)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str, default: Any = None) -> Any:
        return self._by_name.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"<DataBackends {[f'{n}:{_state(b)}' for n, b in self._by_name.items()]}>"

