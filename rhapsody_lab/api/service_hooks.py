"""``Session.start_service`` / ``get_service`` / ``stop_service``: the session's servers.

A service is a long-running process with a readiness check (``api.services.Service``); the
session keeps them in a ``ServiceSet`` created with the first one and stops them at close.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .errors import SessionError

__all__ = ["ServiceHooks"]


class ServiceHooks:
    """The services part of ``Session`` (mixed in)."""

    uid: str
    work_dir: str
    _services: Any = None  # a ServiceSet, created with the first service
    _check_open: Callable[[], None]  # Session's: SessionError once closed

    @property
    def services(self) -> Any:
        """The long-running services (``rhapsody_lab.services.ServiceSet``) of this session."""
        if self._services is None:
            from .service_set import ServiceSet
            self._services = ServiceSet()
        return self._services

    async def start_service(self, name: str, command: list[str], **options: Any) -> Any:
        """Start a service (a server process with a readiness check) and wait until ready.

        ``options`` go to ``rhapsody_lab.services.Service``: ``ready_url``, ``endpoint``,
        ``env``, ``log_file``, ``startup_timeout``...; it is stopped by ``close()``.
        """
        self._check_open()
        if not isinstance(name, str) or not name:
            raise SessionError(f"service name must be a non-empty string, got {name!r}")
        if isinstance(command, str) or not command:
            raise SessionError(f"service command must be a non-empty list of strings, got "
                               f"{command!r}; e.g. ['python', '-m', 'http.server', '8000']")
        options.setdefault("log_file", os.path.join(self.work_dir, f"{self.uid}.{name}.log"))
        return await self.services.start(name, command, **options)

    def get_service(self, name: str) -> Any:
        """The service called ``name`` (its ``endpoint``, ``state``, ``tail()``)."""
        return self.services.get(name)

    async def stop_service(self, name: str) -> None:
        """Stop the service called ``name`` (SIGTERM to its process group, then SIGKILL)."""
        await self.services.stop(name)
