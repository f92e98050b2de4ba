"""The life cycle every data backend shares (a Redis server, a Dragon DDict).

A data backend launches and owns a piece of data infrastructure and hands back its
``endpoints``; it runs no tasks. States: ``CREATED -> STARTING -> READY | FAILED``, and
``CREATED | READY | FAILED -> SHUTDOWN``; ``FAILED`` and ``SHUTDOWN`` are final. One lock
per backend makes repeated or concurrent ``start``/``shutdown`` calls safe.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import os
from collections.abc import Generator
from typing import Any

from ...api.errors import RhapsodyError, SessionError

__all__ = [
    "DataBackend",
    "DataBackendError",
    "DataBackendNotReadyError",
    "DataBackendStartupError",
    "DataBackendState",
    "DataBackendStateError",
    "DataBackendTerminatedError",
    "Endpoint",
]


class DataBackendState(enum.Enum):
    """Where a `DataBackend` is in its life cycle."""

    CREATED = "CREATED"
    STARTING = "STARTING"
    READY = "READY"
    FAILED = "FAILED"
    SHUTDOWN = "SHUTDOWN"


_FINAL = frozenset({DataBackendState.FAILED, DataBackendState.SHUTDOWN})


class DataBackendError(RhapsodyError):
    """Base class of the data backends' errors."""


class DataBackendStartupError(DataBackendError):
    """The backend did not become ready in ``start()`` (it is FAILED and cleaned up)."""


class DataBackendStateError(DataBackendError):
    """A call that the backend's current state does not allow."""


class DataBackendNotReadyError(DataBackendStateError):
    """``endpoints`` was read before ``start()`` succeeded."""


class DataBackendTerminatedError(DataBackendStateError):
    """``start()`` on a FAILED or SHUTDOWN backend; make a new one instead."""


class Endpoint(abc.ABC):
    """How to reach one instance of a data backend; never builds a client itself."""

    @abc.abstractmethod
    def serialize(self) -> str:
        """A string to pass along (env var, task argument) to connect from elsewhere."""


class DataBackend(abc.ABC):
    """Start, check and stop one piece of data infrastructure; ``await backend`` starts it.

    Subclasses write ``_do_start`` (return the endpoints; clean up and raise on failure),
    ``_do_shutdown`` (tolerates a partial start) and ``_do_ready`` (a live check).
    """

    def __init__(self, *, name: str | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name
                                 or any(c.isspace() for c in name)):
            raise SessionError(f"{type(self).__name__}: name must be a non-empty string "
                               f"without spaces, got {name!r}; pass name=\"my_store\"")
        self._name = name
        self._state = DataBackendState.CREATED
        self._endpoints: list[Endpoint] = []
        self._lock = asyncio.Lock()
        self._session_dir: str | None = None  # set by a Session before start (work_dir)

    @property
    def name(self) -> str:
        """The name a Session registers this backend under."""
        return self._name or type(self).__name__

    @property
    def state(self) -> DataBackendState:
        return self._state

    @property
    def endpoints(self) -> list[Endpoint]:
        """The endpoints of a READY backend; `DataBackendNotReadyError` otherwise."""
        if self._state is not DataBackendState.READY:
            raise DataBackendNotReadyError(
                f"{type(self).__name__} '{self.name}' is not ready (state="
                f"{self._state.name}); call `await backend.start()` first")
        return list(self._endpoints)

    async def ready(self) -> bool:
        """True if the backend is READY and answers now (checked live, never cached)."""
        if self._state is not DataBackendState.READY:
            return False
        return await self._do_ready()

    def __await__(self) -> Generator[Any, None, DataBackend]:
        return self.start().__await__()

    async def __aenter__(self) -> DataBackend:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def start(self, wait: bool = True) -> DataBackend:
        """Launch the infrastructure (``wait``: until it answers); returns the backend."""
        if not isinstance(wait, bool):
            raise SessionError(f"{type(self).__name__}.start: wait must be True or False, "
                               f"got {wait!r}")
        async with self._lock:
            if self._state in _FINAL:
                raise DataBackendTerminatedError(
                    f"{type(self).__name__} '{self.name}' is {self._state.name} and cannot "
                    "be started again; create a new backend")
            if self._state is DataBackendState.READY:
                return self
            self._state = DataBackendState.STARTING
            try:
                endpoints = await self._do_start(wait=wait)
            except BaseException as exc:
                self._state = DataBackendState.FAILED
                self._endpoints = []
                if isinstance(exc, DataBackendError | SessionError) or not isinstance(
                        exc, Exception):
                    raise
                raise DataBackendStartupError(
                    f"{type(self).__name__} '{self.name}' failed to start: {exc}") from exc
            self._endpoints = list(endpoints)
            self._state = DataBackendState.READY
            return self

    async def shutdown(self) -> DataBackend:
        """Stop the infrastructure and free what it holds (idempotent); returns the backend."""
        async with self._lock:
            if self._state is DataBackendState.SHUTDOWN:
                return self
            try:
                await self._do_shutdown()
            finally:
                self._state = DataBackendState.SHUTDOWN
                self._endpoints = []
            return self

    def _use_session_dir(self, path: str) -> None:
        """A Session's folder for this backend's files, unless the user chose one."""
        if self._session_dir is None:
            self._session_dir = os.fspath(path)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self._state.name}>"

    @abc.abstractmethod
    async def _do_start(self, wait: bool) -> list[Endpoint]:
        """Launch; return the endpoints. On failure clean up, then raise."""

    @abc.abstractmethod
    async def _do_shutdown(self) -> None:
        """Tear down; must accept a never-started or half-started backend."""

    @abc.abstractmethod
    async def _do_ready(self) -> bool:
        """A live readiness check."""
