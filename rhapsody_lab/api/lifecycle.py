"""The task life cycle: the one place where a task's state changes.

``NEW -> SUBMITTED -> QUEUED -> RUNNING -> DONE | FAILED | CANCELED``: a move may skip
states, never goes back, and a terminal state is final. Like ``concurrent.futures.Future``
owning its states, ``TaskLifecycle`` (a base of every backend) is the only code that writes
``task["state"]``: each move is checked, set, emitted to the session's event stream and
passed to the backend's callbacks; a terminal move also resolves the task's future. The
session moves its tasks to SUBMITTED through the backend they are routed to.

Moves of many tasks at once (``move_all``, ``finish_done``) do the same work in a few
C-level passes; they refuse (and the caller moves task by task) whenever a task is not in
the plain case, so both paths mean the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from itertools import compress, repeat
from typing import Any

from . import bulk
from .errors import TaskExecutionError
from .events import run_events
from .states import CANCELED, DONE, FAILED, STATES, TERMINAL_STATES, state_rank

__all__ = ["TaskLifecycle", "may_move"]

log = logging.getLogger(__name__)

#: For each state, the states a task may be in to move there (earlier, not terminal).
_MAY_COME_FROM: dict[str, frozenset[str]] = {
    new: frozenset(s for s in STATES if s not in TERMINAL_STATES
                   and state_rank(s) < state_rank(new)) for new in STATES}


def may_move(current: str, new: str) -> bool:
    """Whether a task in ``current`` may move to ``new`` (forward, never out of terminal)."""
    return current in _MAY_COME_FROM[new]


def _no_emit(event: tuple) -> None:
    """Event sink of a backend used without a session."""


class TaskLifecycle:
    """State changes of the tasks one backend holds: check, set, emit, notify, resolve.

    Needs ``_name``, ``_live`` (uid -> task) and ``_callbacks`` from the backend; ``emit``
    is the session's event stream once attached (tests may replace it with a tap).
    """

    _name: str
    _live: dict[str, Any]
    _callbacks: list[Callable[[dict, str], None]]

    def _init_lifecycle(self) -> None:
        self.emit: Callable[[tuple], None] = _no_emit
        self._attached_emit: Any = None  # the emit attach() gave, with its run form:
        self._stream_run: Callable[..., None] | None = None  # EventStream.emit_run

    # -- events ------------------------------------------------------------------------
    def emit_run(self, times: Any, uids: list, state: str, backend: str,
                 slots: Any = None) -> None:
        """Emit ``state`` for every task in ``uids`` at once (``times``/``slots``: one value,
        or a list per task). The session's stream keeps it as one run (``EventStream.
        emit_run``); an ``emit`` replaced since ``attach`` still gets every event."""
        run = self._stream_run
        if run is not None and self.emit is self._attached_emit:
            run(times, uids, state, backend, slots)
            return
        emit = self.emit
        for event in run_events(times, uids, state, backend, slots):
            emit(event)

    def _notify(self, task: dict, state: str) -> None:
        for cb in self._callbacks:
            try:
                cb(task, state)
            except Exception:
                log.exception("callback %r of backend %s failed", cb, self._name)

    # -- moves -------------------------------------------------------------------------
    def move(self, task: dict, state: str, now: float, slot: object = None,
             notify: bool = True) -> bool:
        """Move ``task`` to the non-terminal ``state``; False (nothing done) if that would
        go back or repeat (a late RUNNING after a cancel, a start reported twice)."""
        if task["state"] not in _MAY_COME_FROM[state]:
            return False
        task["state"] = state
        self.emit((now, task["uid"], state, self._name, slot))
        if notify and self._callbacks:
            self._notify(task, state)
        return True

    def move_all(self, tasks: Sequence[dict], state: str, times: Any, slots: Any = None,
                 notify: bool = True) -> None:
        """``move`` for many tasks (``times``/``slots``: one value, or a list per task): the
        tasks that may move (usually all) move as one run of events; the rest stay."""
        allowed = _MAY_COME_FROM[state]
        if len(tasks) < bulk.FEW:
            for task, t, slot in zip(tasks, _each(times), _each(slots), strict=False):
                self.move(task, state, t, slot, notify)
            return
        if not bulk.all_in(tasks, allowed):
            mask = [task["state"] in allowed for task in tasks]
            tasks = list(compress(tasks, mask))
            times = list(compress(times, mask)) if times.__class__ is list else times
            slots = list(compress(slots, mask)) if slots.__class__ is list else slots
            if not tasks:
                return
        for task in tasks:
            task["state"] = state
        self.emit_run(times, [task["uid"] for task in tasks], state, self._name, slots)
        if notify and self._callbacks:
            for task in tasks:
                self._notify(task, state)

    def _finish(self, task: dict, state: str, now: float, slot: object = None,
                reason: str | None = None) -> None:
        """Move ``task`` to a terminal state (on the loop) and resolve its future."""
        uid = task["uid"]
        if self._live.pop(uid, None) is None and task["state"] in TERMINAL_STATES:
            return  # already final: terminal states never change
        task["state"] = state
        if state == CANCELED and reason and not task.get("stderr"):
            task["stderr"] = f"canceled: {reason}"
        self.emit((now, uid, state, self._name, slot))
        fut = task._future if hasattr(task, "_future") else None
        if fut is not None and not fut.done():
            if state == FAILED:
                exc = task.get("exception")
                if exc is None:
                    exc = TaskExecutionError(uid, task.get("stderr") or "", task.get("exit_code"))
                    task["exception"] = exc
                if isinstance(exc, StopIteration | StopAsyncIteration):
                    exc = RuntimeError(f"task {uid} raised {exc!r}")  # futures refuse these
                fut.set_exception(exc)
                fut.exception()  # failures are recorded on the task; never log them as lost
            else:
                fut.set_result(task)
        if self._callbacks:
            self._notify(task, state)

    def finish_done(self, tasks: list, times: Sequence[float], slots: Any) -> bool:
        """Finish ``tasks`` as DONE at once (the bulk of a busy drain).

        Only for the plain case: no callbacks, every task live here (once) and bound to a
        pending asyncio future. Returns False otherwise, the tasks' states unchanged (some may
        have left ``_live``): the caller then finishes them one by one with ``_finish``,
        which finishes a non-final task whether or not it is still live. ``slots``: a list,
        or one for all.
        """
        if self._callbacks:
            return False
        futs = bulk.futures(tasks)
        if futs is None:
            return False  # a future that is not a pending asyncio one
        live = self._live
        uids = [task["uid"] for task in tasks]
        for uid in uids:
            if live.pop(uid, None) is None:
                return False  # not live here, or twice in the run
        for task in tasks:
            task["state"] = DONE
        self.emit_run(list(times), uids, DONE, self._name, slots)
        bulk.resolve(futs, tasks)
        return True


def _each(values: Any) -> Any:
    """A list per task as is, one value for all as an endless repeat."""
    return values if values.__class__ is list else repeat(values)

