"""The services of one owner (a Session), by name."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .errors import BackendError
from .services import Service

__all__ = ["ServiceSet"]


class ServiceSet:
    """The services of one owner (a Session), by name; ``stop_all()`` on close."""

    def __init__(self) -> None:
        self._by_name: dict[str, Service] = {}

    async def start(self, name: str, command: Sequence[str], *, wait_ready: bool = True,
                    **options) -> Service:
        """Create and start ``Service(name, command, **options)``; names are unique."""
        old = self._by_name.get(name)
        if old is not None and old.state in ("STARTING", "READY"):
            raise BackendError(name, f"a service named {name!r} is already {old.state.lower()}"
                               "; stop it first or choose another name")
        svc = Service(name, command, **options)
        self._by_name[name] = svc
        await svc.start(wait_ready=wait_ready)
        return svc

    def get(self, name: str) -> Service:
        try:
            return self._by_name[name]
        except KeyError:
            raise BackendError(name, f"no service named {name!r}; services: "
                               f"{sorted(self._by_name)}") from None

    async def stop(self, name: str) -> None:
        await self.get(name).stop()

    async def stop_all(self) -> None:
        """Stop every service (concurrently); errors are raised after all were tried."""
        results = await asyncio.gather(*(s.stop() for s in self._by_name.values()),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self):
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"<ServiceSet {[f'{n}:{s.state}' for n, s in self._by_name.items()]}>"
