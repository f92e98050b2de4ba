"""The task life cycle: the one place where a task's state changes, and the one drain.

``NEW -> SUBMITTED -> QUEUED -> RUNNING -> DONE | FAILED | CANCELED``: a move may skip
states, never goes back, and a terminal state is final. Like ``concurrent.futures.Future``
owning its states, ``TaskLifecycle`` (a base of every backend) is the only code that writes
``task["state"]``: each move is checked, set, emitted to the session's event stream and
passed to the backend's callbacks; a terminal move also resolves the task's future. The
session moves its tasks to SUBMITTED through the backend they are routed to.

A backend's workers, on any thread, only ``report(task, state, time, slot)``: one outcome
record (RUNNING when a task starts, then its terminal state, its result fields filled in),
and the loop is woken at most once per batch. ``_drain``, on the loop, applies the records
in order within a time budget. Moves of many tasks at once (``move_all``, ``finish_done``,
a step of starts and ends) do the same work as the one-by-one path, which they fall back
to whenever a task is not in the plain case.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import compress, repeat
from operator import eq, itemgetter
from typing import Any

from . import bulk
from .errors import BackendError, TaskExecutionError
from .events import run_events
from .states import CANCELED, DONE, FAILED, QUEUED, RUNNING, STATES, TERMINAL_STATES, state_rank
from .task import complete_plain_task

__all__ = ["DONE_RUN", "TaskLifecycle", "may_move"]

#: Outcome record of many tasks that all ended DONE: ``(tasks, DONE_RUN, (starts, ends),
#: slot)``, the starts and ends lists in task order (a worker's chunk of null tasks).
DONE_RUN = "DONE_RUN"
_TASK_OF, _STATE_OF, _TIME_OF, _SLOT_OF = (itemgetter(i) for i in range(4))  # a record

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
    _claims: dict[str, Any]
    _callbacks: list[Callable[[dict, str], None]]
    _loop: asyncio.AbstractEventLoop | None
    _wake_session: Callable[[], None] | None
    name: str

    #: One drain callback applies at most this many records (a task has two: its start and
    #: its end), in steps of ``drain_step``, for at most ``drain_seconds`` (None: no
    #: clock), so the loop stays responsive.
    drain_budget: int = 4_000
    drain_step: int = 512
    drain_seconds: float | None = 0.004
    #: Whether a task's start may be reported twice (a first look, then with its result):
    #: the drain then checks a step's starts for repeats before moving them at once.
    starts_may_repeat: bool = False

    def _init_lifecycle(self) -> None:
        self._done: deque = deque()  # outcome records (task, state, time, slot), any thread
        self._wake_pending = False
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
        if state == FAILED:  # stdout and stderr are str once FAILED (RHAPSODY's contract)
            if task.get("stdout") is None:
                task["stdout"] = ""
            if task.get("stderr") is None:
                task["stderr"] = ""
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

    # -- the drain: outcome records -> moves ---------------------------------------------
    def _accept(self, tasks: Sequence[dict]) -> None:
        """Record ``tasks`` as live and QUEUED here."""
        live = self._live
        for task in tasks:
            if task.__class__ is dict:  # not a ComputeTask/AITask: a caller's own dict
                complete_plain_task(task)
            live[task["uid"]] = task
        self.move_all(tasks, QUEUED, time.time())

    def report(self, task: dict, state: str, t: float, slot: object = None) -> None:
        """From any thread: ``task`` reached ``state`` (RUNNING, or terminal with its
        result fields already filled in) at ``t``; the drain applies it on the loop."""
        self._done.append((task, state, t, slot))
        self._wake_drain()

    def _wake_drain(self, drain: Callable[[], Any] | None = None) -> None:
        """From any thread: run ``self._drain()`` (or ``drain``, which calls it) on the
        loop, at most once per batch.

        A backend appends outcomes to a deque, then calls this; its ``_drain`` clears
        ``_wake_pending`` first and then empties the deque, so no outcome is left behind.
        """
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(  # type: ignore[attr-defined]
                self._drain if drain is None else drain)
        except RuntimeError:  # loop closed: the session is gone, nothing to deliver to
            pass

    def _drain(self) -> None:
        """On the loop: apply the outcome records, in order, within the drain budget."""
        self._wake_pending = False
        done, step = self._done, self.drain_step
        n, seconds = 0, self.drain_seconds
        deadline = None if seconds is None else time.perf_counter() + seconds
        while done and n < self.drain_budget and (
                deadline is None or time.perf_counter() < deadline):
            n += self._apply(bulk.take(done, step))
        self._drained()
        if done:
            self._drain_again()
        if self._wake_session is not None:
            self._wake_session()

    def _apply(self, records: list) -> int:
        """Apply a step of records: starts and DONE outcomes at once when that is all they
        are (a busy run; a task's start always precedes its end), else one by one.
        Returns the number of tasks' records applied."""
        states = list(map(_STATE_OF, records))
        starts = states.count(RUNNING)
        if states.count(DONE) + starts == len(records) >= bulk.FEW and \
                self._apply_bulk(records, states, starts):
            return len(states)
        for record in records:
            self._apply_one(record)
        return len(states) + sum(len(r[0]) - 1 for r in records if r[1] == DONE_RUN)

    def _apply_bulk(self, records: list, states: list, starts: int) -> bool:
        """``_apply`` for a step of only RUNNING and DONE records; False (nothing done) if
        a start is there twice (``starts_may_repeat``): then it goes one by one."""
        if starts:
            running = list(compress(records, map(eq, states, repeat(RUNNING))))
            tasks = list(map(_TASK_OF, running))
            if self.starts_may_repeat and len(set(map(id, tasks))) != len(tasks):
                return False
            self.move_all(tasks, RUNNING, list(map(_TIME_OF, running)),
                          list(map(_SLOT_OF, running)))
            if starts == len(records):
                return True
            records = list(compress(records, map(eq, states, repeat(DONE))))
        tasks = list(map(_TASK_OF, records))
        self._release_claims(tasks)
        if not self.finish_done(tasks, list(map(_TIME_OF, records)),
                                list(map(_SLOT_OF, records))):
            for record in records:
                self._apply_one(record)
        return True

    def _apply_one(self, record: tuple) -> None:
        task, state, t, slot = record
        if state == RUNNING:  # (== : a state may come back unpickled from a worker)
            self.move(task, RUNNING, t, slot)
        elif state == DONE_RUN:
            self._apply_done_run(task, t, slot)
        elif state in (DONE, FAILED, CANCELED):
            self._claims.pop(task["uid"], None)
            self._finish(task, state, t, slot)
        else:
            self._on_record(record)

    def _apply_done_run(self, tasks: list, times: tuple[list, list], slot: object) -> None:
        starts, ends = times
        self.move_all(tasks, RUNNING, starts, slot)
        self._release_claims(tasks)
        if not self.finish_done(tasks, ends, slot):
            for task, t in zip(tasks, ends, strict=True):
                self._finish(task, DONE, t, slot)

    def _release_claims(self, tasks: list) -> None:
        claims = self._claims
        if claims:
            for task in tasks:
                claims.pop(task["uid"], None)

    def _on_record(self, record: tuple) -> None:
        """A record of a state of this backend's own (e.g. a retry); none by default."""
        raise BackendError(self.name, f"unknown outcome state {record[1]!r}")

    def _drained(self) -> None:
        """Called at the end of each drain callback (e.g. to feed a pool again)."""

    def _drain_again(self) -> None:
        """``_drain`` ran out of budget: finish the rest next loop iteration, once.

        A worker may already have scheduled a drain while this one ran; a second one would
        double the loop's share of the work in one iteration (and its stall).
        """
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon(self._drain)  # type: ignore[attr-defined]


def _each(values: Any) -> Any:
    """A list per task as is, one value for all as an endless repeat."""
    return values if values.__class__ is list else repeat(values)

