"""``TaskStateManager``: RHAPSODY's callback-driven waiting on tasks, for code that uses it.

A ``Session`` here does not need it (the backends' life cycle resolves each task's future);
it is for code written against RHAPSODY that registers ``update_task`` as a backend
callback and waits with ``get_wait_future``. A terminal state resolves the task's future:
with the task, with its ``exception``, or with ``TaskExecutionError`` for a non-zero exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from .errors import TaskExecutionError
from .states import TERMINAL_STATES

__all__ = ["TaskStateManager"]


class TaskStateManager:
    """Futures by uid, resolved when ``update_task`` sees a terminal state (on the loop)."""

    def __init__(self) -> None:
        self._task_futures: dict[str, asyncio.Future] = {}
        self._terminal_states: set[str] = set(TERMINAL_STATES)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._telemetry_observer: Callable[[dict, str], None] | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create futures on ``loop`` (by default: the running loop at the first call)."""
        self._loop = loop

    def set_terminal_states(self, states: Iterable[str]) -> None:
        """The states that end a task (DONE, FAILED, CANCELED unless told otherwise)."""
        self._terminal_states = set(states)

    def update_task(self, task: dict, state: str, **_: object) -> None:
        """A backend callback: record ``state`` on ``task``; a terminal one resolves it."""
        task["state"] = state
        if self._telemetry_observer is not None:
            self._telemetry_observer(task, state)
        if state in self._terminal_states:
            fut = self._task_futures.pop(task["uid"], None)
            if fut is not None and not fut.done():
                _resolve(fut, task)

    def get_wait_future(self, uid: str, task: dict) -> asyncio.Future:
        """The future of ``uid`` (created once; already resolved if ``task`` has ended)."""
        fut = self._task_futures.get(uid)
        if fut is None:
            if self._loop is None:
                try:
                    self._loop = asyncio.get_running_loop()
                except RuntimeError:
                    pass  # no loop yet: a plain future, as RHAPSODY does
            fut = self._loop.create_future() if self._loop is not None else asyncio.Future()
            self._task_futures[uid] = fut
            if task.get("state") in self._terminal_states:
                _resolve(fut, task)
        return fut


def _resolve(fut: asyncio.Future, task: dict) -> None:
    exc: Any = task.get("exception")
    code = task.get("exit_code")
    if isinstance(exc, BaseException):
        fut.set_exception(exc)
    elif code is not None and code != 0:
        fut.set_exception(TaskExecutionError(task["uid"], task.get("stderr") or "", code))
    else:
        fut.set_result(task)
