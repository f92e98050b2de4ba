"""A backend written for RHAPSODY, run by a session: ``AdoptedBackend`` wraps it.

Such a backend subclasses ``rhapsody_lab.backends.base.BaseBackend`` (RHAPSODY's contract,
``api.contract``) and reports each state change with ``self._callback_func(task, state)``.
The session registers an ``AdoptedBackend`` in its place (``session.backends[name]``; the
user's object is its ``inner``): tasks become QUEUED as they are handed over, the
reported states (translated by the backend's ``StateMapper``) go through the engine's life
cycle, and what the backend still holds at shutdown becomes CANCELED.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from .backend import BaseBackend
from .contract import BackendContract
from .errors import SessionError
from .states import CANCELED, FAILED, QUEUED, RUNNING, STATES, TERMINAL_STATES

__all__ = ["AdoptedBackend"]

log = logging.getLogger(__name__)


class AdoptedBackend(BaseBackend):
    """Runs ``inner``, a backend that implements only RHAPSODY's contract."""

    task_kinds = frozenset({"function", "executable", "ai"})

    def __init__(self, inner: BackendContract):
        if not isinstance(inner, BackendContract):
            raise SessionError(f"expected a backend, got {type(inner).__name__}")
        name = inner.name
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise SessionError(f"backend {type(inner).__name__} has name {name!r}; RHAPSODY "
                               "backends routed by a session need a name without spaces")
        super().__init__(name)
        self.inner = inner
        self.attached_to = inner.attached_to  # one list: a backend serves one session
        self.task_kinds = frozenset(getattr(inner, "task_kinds", self.task_kinds))
        self._last: dict[str, str] = {}  # uid -> engine state (the inner may set its own)
        self._mapper: Any = None

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    def __repr__(self) -> str:
        return f"AdoptedBackend({self.inner!r})"

    # -- life cycle --------------------------------------------------------------------
    async def _start(self) -> None:
        """Nothing to start: as with RHAPSODY, the user awaits their backend."""

    def attach(self, emit: Any, wake: Any = None, work_dir: str | None = None,
               emit_run: Any = None, session_uid: str | None = None) -> None:
        super().attach(emit, wake, work_dir, emit_run, session_uid)
        inner = self.inner
        if session_uid is not None:
            inner.is_attached = True
        inner._work_dir = self._work_dir
        inner.register_callback(self._on_state)
        try:
            self._mapper = inner.get_task_states_map()
        except Exception as exc:  # unregistered states: the main ones are still understood
            log.debug("backend %s has no state map (%s); main states assumed", self.name, exc)

    async def _stop(self) -> None:
        await self.inner.shutdown()

    def capacity(self) -> int:
        found = getattr(self.inner, "capacity", None)
        try:
            return int(found()) if callable(found) else 1
        except Exception:
            return 1

    # -- tasks -------------------------------------------------------------------------
    async def submit_tasks(self, tasks: Sequence[dict]) -> None:
        self._ensure_running()
        tasks = list(tasks)
        self._accept(tasks)
        for task in tasks:
            self._last[task["uid"]] = QUEUED
        try:
            await self.inner.submit_tasks(tasks)
        except Exception as exc:  # refused: these tasks FAIL with the reason, others go on
            now = time.time()
            for task in tasks:
                if task["uid"] in self._live and self._last.get(task["uid"]) == QUEUED:
                    task["exception"] = exc
                    task["stderr"] = f"backend {self.name} refused the task: {exc}"
                    self._last.pop(task["uid"], None)
                    self._finish(task, FAILED, now)

    async def cancel_task(self, uid: str) -> bool:
        task = self._live.get(uid)
        done = bool(await self.inner.cancel_task(uid))
        if done and task is not None and uid in self._live:  # canceled, but not reported
            self._last.pop(uid, None)
            self._finish(task, CANCELED, time.time(), reason="canceled")
        return done

    def _on_state(self, task: dict, state: Any) -> None:
        """The inner backend's callback: a task reached ``state`` (from any thread)."""
        loop = self._loop
        if loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self._on_state, task, state)
                return
        main = self._main_state(state)
        uid = task["uid"]
        if main is None or uid not in self._live:
            if main is None:
                log.warning("backend %s reported unknown state %r of task %s",
                            self.name, state, uid)
            return
        if main in TERMINAL_STATES:
            self._last.pop(uid, None)
            self._finish(task, main, time.time())
        elif main in (QUEUED, RUNNING):
            task["state"] = self._last.get(uid, QUEUED)  # the inner may have set it already
            if self.move(task, main, time.time()):
                self._last[uid] = main

    def _main_state(self, state: Any) -> str | None:
        mapper = self._mapper
        if mapper is not None:
            try:
                return mapper.to_main_state(state).value
            except (ValueError, AttributeError):
                pass
        value = getattr(state, "value", state)
        return value if value in STATES else None
