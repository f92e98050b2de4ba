"""``TaskStateManager``: futures for tasks whose states arrive through a callback.

RHAPSODY's public helper for code that drives a backend without a Session: register
``manager.update_task`` with ``backend.register_callback``, then await
``manager.get_wait_future(uid, task)``. A rhapsody_lab ``Session`` does not need it (its
life cycle resolves each task's own future), but code written for RHAPSODY may use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from .errors import TaskExecutionError
from .states import TERMINAL_STATES

__all__ = ["TaskStateManager"]


def _settle(future: asyncio.Future, task: dict) -> None:
    """Resolve ``future`` with ``task``, or fail it as the task failed."""
    if future.done():
        return
    exc, code = task.get("exception"), task.get("exit_code")
    if isinstance(exc, BaseException):
        future.set_exception(exc)
    elif code not in (None, 0):
        future.set_exception(TaskExecutionError(task["uid"], task.get("stderr") or "", code))
    else:
        future.set_result(task)


class TaskStateManager:
    """Keeps one future per awaited task and settles it when the task ends."""

    def __init__(self, terminal_states: Iterable[str] = TERMINAL_STATES):
        self._task_futures: dict[str, asyncio.Future] = {}
        self._terminal_states = set(terminal_states)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._telemetry_observer: Callable[[dict, str], None] | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop new futures belong to (by default the running one)."""
        self._loop = loop

    def set_terminal_states(self, states: Iterable[str]) -> None:
        """The states that end a task (a backend with states of its own sets them)."""
        self._terminal_states = set(states)

    def update_task(self, task: dict, state: str, **_details: Any) -> None:
        """A backend callback, on the event loop: ``task`` is now in ``state``."""
        task["state"] = state
        if self._telemetry_observer is not None:
            self._telemetry_observer(task, state)
        if state in self._terminal_states:
            future = self._task_futures.pop(task["uid"], None)
            if future is not None:
                _settle(future, task)

    def get_wait_future(self, uid: str, task: dict) -> asyncio.Future:
        """The future that settles when ``task`` ends (already settled if it has)."""
        future = self._task_futures.get(uid)
        if future is None:
            if self._loop is None:
                try:
                    self._loop = asyncio.get_running_loop()
                except RuntimeError:
                    pass
            future = self._loop.create_future() if self._loop else asyncio.Future()
            if task.get("state") in self._terminal_states:
                _settle(future, task)
            else:
                self._task_futures[uid] = future
        return future
