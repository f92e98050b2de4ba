"""RHAPSODY's backend contract (``rhapsody.backends.base.BaseBackend``), as users subclass it.

A backend written for RHAPSODY implements the seven abstract methods below and reports
each state change of a task by calling ``self._callback_func(task, state)`` on the event
loop. ``api.backend.BaseBackend`` (the engine's backends) is a subclass that implements
five of them itself; a session runs any other subclass through ``api.adopted``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

__all__ = ["BackendContract"]


class BackendContract(ABC):
    """What a backend is to RHAPSODY: submit, cancel, shut down, states, callbacks."""

    #: RADICAL AsyncFlow calls the ``link_*_data_deps`` hooks only where these are True.
    supports_implicit_data_linking: bool = False
    supports_explicit_data_linking: bool = False

    def __init__(self, name: str | None = None):
        self._name = name
        self._work_dir: str = os.getcwd()  # where capture_stdio files go; set on attach
        self.is_attached = False
        self.attached_to: list[str] = []
        self._callback_func: Callable[[dict, str], None] = _ignore

    @property
    def name(self) -> str:
        """The name given, else the class name."""
        return self._name or type(self).__name__

    def register_callback(self, func: Callable[[dict, str], None]) -> None:
        """Make ``func(task, state)`` the one callback of state changes (RHAPSODY's)."""
        self._callback_func = func

    @abstractmethod
    async def submit_tasks(self, tasks: list[dict]) -> None:
        """Queue ``tasks``; return as soon as they are accepted."""

    @abstractmethod
    async def shutdown(self) -> None:
        """Stop the backend, ending what it still runs."""

    @abstractmethod
    def state(self) -> Any:
        """The backend's own state (a string, or an awaitable of one)."""

    @abstractmethod
    def task_state_cb(self, task: dict, state: str) -> None:
        """Hook called with a task's state changes (may do nothing)."""

    @abstractmethod
    def get_task_states_map(self) -> Any:
        """A ``StateMapper`` of the task states this backend reports."""

    @abstractmethod
    def build_task(self, task: dict) -> None:
        """Prepare or check ``task`` before it runs (may do nothing)."""

    @abstractmethod
    async def cancel_task(self, uid: str) -> bool:
        """Cancel one task; True if it will not run to completion."""

    def link_implicit_data_deps(self, src_task: dict, dst_task: dict) -> None:
        """Nothing to link by default (``supports_implicit_data_linking``)."""

    def link_explicit_data_deps(self, src_task: dict | None = None,
                                dst_task: dict | None = None, file_name: str | None = None,
                                file_path: str | None = None) -> dict | None:
        """Nothing to stage by default (``supports_explicit_data_linking``)."""
        return None


def _ignore(task: dict, state: str) -> None:
    """The callback of a backend no session registered with yet."""
