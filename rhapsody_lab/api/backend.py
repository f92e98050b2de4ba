"""The backend contract every runtime implements, and the one drain they share.

A backend is awaitable (``await backend`` initialises it and returns it), accepts tasks
with ``submit_tasks`` (returning once they are queued, never waiting for them to run) and
``cancel_task``, and stops with ``shutdown``; ``capacity()`` is its number of slots, for
utilisation. Its workers, on any thread, only record what happened: ``report(task, state,
time, slot)`` appends one outcome record (RUNNING when a task starts, then its terminal
state) and wakes the loop at most once per batch. ``_drain``, on the loop, turns the records
into state changes through the task life cycle (``api.lifecycle``), in order, within a time
budget. A new backend writes ``_start``, ``submit_tasks``, ``cancel_task``, ``_stop`` and
where its outcomes come from; nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from itertools import compress, repeat
from operator import eq, itemgetter
from typing import Any

from . import bulk
from .errors import BackendError, SessionError, TaskExecutionError
from .lifecycle import TaskLifecycle
from .states import CANCELED, DONE, FAILED, QUEUED, RUNNING, SUBMITTED

__all__ = ["CANCELED_CLAIM", "DONE_RUN", "BaseBackend", "record_failure", "result_text"]

CANCELED_CLAIM = object()  # a claim marker: the task was canceled before a worker took it
#: Outcome record of many tasks that all ended DONE: ``(tasks, DONE_RUN, (starts, ends),
#: slot)``, the starts and ends lists in task order (a worker's chunk of null tasks).
DONE_RUN = "DONE_RUN"

log = logging.getLogger(__name__)

_TASK_OF, _STATE_OF, _TIME_OF, _SLOT_OF = (itemgetter(i) for i in range(4))  # a record


class BaseBackend(TaskLifecycle, ABC):
    """Shared life cycle, callbacks, task bookkeeping and drain of a backend."""

    #: Task kinds this backend runs: "function", "executable", "ai".
    task_kinds: frozenset[str] = frozenset({"function", "executable"})
    #: Events pending in the session's stream before one of this backend's finished
    #: batches delivers them at once (statistics, journal, dashboards); fewer are left to
    #: the stream's 0.1 s timer, off the critical path of the next completions.
    flush_min: int = 1_000
    #: One drain callback applies at most this many records (a task has two: its start and
    #: its end), in steps of ``drain_step``, for at most ``drain_seconds`` (None: no
    #: clock), so the loop stays responsive.
    drain_budget: int = 4_000
    drain_step: int = 512
    drain_seconds: float | None = 0.004
    #: Whether a task's start may be reported twice (a first look, then with its result):
    #: the drain then checks a step's starts for repeats before moving them at once.
    starts_may_repeat: bool = False

    def __init__(self, name: str):
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise SessionError(f"backend name must be a non-empty string without spaces, "
                               f"got {name!r}; pass name=\"my_backend\"")
        self._name = name
        self._init_lifecycle()
        self._done: deque = deque()  # outcome records (task, state, time, slot), any thread
        self._callbacks: list[Callable[[dict, str], None]] = []
        self._live: dict[str, Any] = {}
        # uid -> who runs it, or CANCELED_CLAIM: workers and cancel race through
        # ``self._claims.setdefault(uid, me)``; whoever gets there first decides
        self._claims: dict[str, Any] = {}
        self._backend_state = "NEW"
        self._init_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_session: Callable[[], None] | None = None
        self._wake_pending = False
        self._work_dir: str | None = None

    # -- identity and life cycle -------------------------------------------------------
    @property
    def name(self) -> str:
        """The name tasks use to route here (``task.backend``)."""
        return self._name

    def __await__(self):
        return self.initialize().__await__()

    async def initialize(self) -> BaseBackend:
        """Start the runtime (idempotent); returns the backend."""
        if self._backend_state == "RUNNING":
            return self
        if self._backend_state in ("SHUTDOWN", "FAILED"):
            raise BackendError(self.name, f"backend is {self._backend_state.lower()}; "
                               "create a new backend to run more tasks")
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self._backend_state != "RUNNING":
                self._loop = asyncio.get_running_loop()
                self._backend_state = "STARTING"
                try:
                    await self._start()
                except BaseException as exc:
                    self._backend_state = "FAILED"
                    if isinstance(exc, BackendError):
                        raise
                    if isinstance(exc, Exception):
                        raise BackendError(self.name, f"could not start: {exc}") from exc
                    raise
                self._backend_state = "RUNNING"
        return self

    @abstractmethod
    async def _start(self) -> None:
        """Start the runtime; runs once, on the event loop."""

    async def state(self) -> str:
        """``"NEW"``, ``"STARTING"``, ``"RUNNING"``, ``"SHUTDOWN"`` or ``"FAILED"``."""
        return self._backend_state

    @property
    def is_running(self) -> bool:
        return self._backend_state == "RUNNING"

    async def __aenter__(self) -> BaseBackend:
        return await self.initialize()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Cancel every live task (ending its processes) and stop the runtime."""
        if self._backend_state == "SHUTDOWN":
            return
        self._backend_state = "SHUTDOWN"
        try:
            await self._stop()
        finally:
            now = time.time()
            for task in list(self._live.values()):
                self._finish(task, CANCELED, now, reason="backend shut down")

    async def _stop(self) -> None:
        """Stop the runtime; tasks left in ``_live`` afterwards become CANCELED."""

    # -- what the session uses ---------------------------------------------------------
    def attach(self, emit: Callable[[tuple], None], wake: Callable[[], None] | None = None,
               work_dir: str | None = None, emit_run: Callable[..., None] | None = None
               ) -> None:
        """Send this backend's events to ``emit`` (the session's event stream) and runs of
        them to ``emit_run`` (``EventStream.emit_run``; by default through ``emit``)."""
        self.emit = emit
        self._attached_emit = emit
        self._stream_run = emit_run
        self._wake_session = wake
        self._work_dir = work_dir

    def can_run(self, task: dict) -> bool:
        """Whether this backend runs tasks of this kind."""
        return _kind(task) in self.task_kinds

    def check_task(self, task: dict) -> None:
        """Raise ``TaskValidationError``/``ResourceError`` if this backend cannot run it."""

    def is_live(self, uid: str) -> bool:
        return uid in self._live

    @abstractmethod
    def capacity(self) -> int:
        """Slots that can run a task at once (for utilisation)."""

    @abstractmethod
    async def submit_tasks(self, tasks: Sequence[dict]) -> None:
        """Queue ``tasks``; return as soon as they are accepted."""

    @abstractmethod
    async def cancel_task(self, uid: str) -> bool:
        """Cancel one task; True if it will not run to completion."""

    async def cancel_all_tasks(self) -> int:
        """Cancel every live task; returns how many were canceled."""
        n = 0
        for uid in list(self._live):
            n += bool(await self.cancel_task(uid))
        return n

    def register_callback(self, func: Callable[[dict, str], None]) -> None:
        """Call ``func(task, state)`` on the event loop at each state change seen here."""
        if not callable(func):
            raise SessionError(f"callback must be callable(task, state), got {func!r}")
        self._callbacks.append(func)

    def get_task_states_map(self) -> dict[str, str]:
        """State of every live task, by uid."""
        return {uid: t["state"] for uid, t in self._live.items()}

    # -- helpers for implementations ---------------------------------------------------
    def _ensure_running(self) -> None:
        if self._backend_state != "RUNNING":
            if self._backend_state == "NEW":
                raise BackendError(self.name, "not initialised; `await backend` first (a "
                                   "Session does it for you on submit)")
            raise BackendError(self.name, f"backend is {self._backend_state.lower()}; "
                               "it accepts no more tasks")

    def _accept(self, tasks: Sequence[dict]) -> None:
        """Record ``tasks`` as live and QUEUED here."""
        live = self._live
        for task in tasks:
            live[task["uid"]] = task
        self.move_all(tasks, QUEUED, time.time())

    def report(self, task: dict, state: str, t: float, slot: object = None) -> None:
        """From any thread: ``task`` reached ``state`` (RUNNING, or terminal with its
        result fields already filled in) at ``t``; the drain applies it on the loop."""
        self._done.append((task, state, t, slot))
        self._wake_drain()

    def _wake_drain(self) -> None:
        """From any thread: run ``self._drain()`` on the loop, at most once per batch.

        A backend appends outcomes to a deque, then calls this; its ``_drain`` clears
        ``_wake_pending`` first and then empties the deque, so no outcome is left behind.
        """
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._drain)  # type: ignore[attr-defined]
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

    def _refuse(self, tasks: Sequence[dict], exc: Exception) -> None:
        """``submit_tasks`` raised: fail the tasks still SUBMITTED with ``exc``, keep others."""
        now = time.time()
        for task in tasks:
            if task["state"] == SUBMITTED:
                task["exception"] = exc
                task["stderr"] = f"backend {self.name} refused the task: {exc}"
                self._finish(task, FAILED, now)

    def _cancel_unstarted(self, uid: str) -> bool | None:
        """Cancel ``uid`` if no worker claimed it yet: True done, False running, None unknown."""
        task = self._live.get(uid)
        if task is None:
            return None
        if self._claims.setdefault(uid, CANCELED_CLAIM) is CANCELED_CLAIM:
            self._finish(task, CANCELED, time.time(), reason="canceled before it started")
            return True
        return False

    def _claim_all_canceled(self) -> None:
        """At shutdown: no worker may start a task it has not claimed yet."""
        for uid in list(self._live):
            self._claims.setdefault(uid, CANCELED_CLAIM)

def result_text(value: Any) -> str:
    """A function's return value as its task's ``stdout`` (``repr`` when ``str()`` fails:
    an object whose ``__str__`` raises must not fail the task)."""
    try:
        return str(value)
    except Exception:
        return object.__repr__(value)


def record_failure(task: dict, exc: BaseException) -> str:
    """Fill in a task that raised ``exc``; returns FAILED (the one failure recorder)."""
    task["exception"] = exc
    cause = exc.__cause__
    remote = getattr(cause, "tb", None)  # a process pool's remote traceback text
    if isinstance(remote, str):
        task["stderr"] = remote
    else:
        task["stderr"] = "".join(traceback.format_exception(exc))
    task["exit_code"] = 1
    if not isinstance(exc, Exception):  # SystemExit & co. must not escape an await
        task["exception"] = TaskExecutionError(task["uid"], repr(exc), 1)
    return FAILED


def _kind(task: dict) -> str:
    if task.get("prompt") is not None:
        return "ai"
    if task.get("function") is not None:
        return "function"
    return "executable"
