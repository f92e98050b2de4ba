"""The backend contract every runtime implements, and the shared task bookkeeping.

A backend is awaitable (``await backend`` initialises it and returns it), accepts tasks
with ``submit_tasks`` (returning once they are queued, never waiting for them to run),
reports every state change through ``emit`` (the session's event stream) and finishes
each task with ``_finish`` on the event loop, which fills the task in place and resolves
its future. ``capacity()`` is the number of slots, for utilisation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from itertools import repeat
from operator import is_, itemgetter, setitem
from typing import Any

from .errors import BackendError, SessionError, TaskExecutionError
from .events import run_events
from .states import CANCELED, DONE, FAILED, QUEUED, SUBMITTED

__all__ = ["CANCELED_CLAIM", "BaseBackend", "result_text", "take_outcomes"]

CANCELED_CLAIM = object()  # a claim marker: the task was canceled before a worker took it

log = logging.getLogger(__name__)

_UID = itemgetter("uid")
_SET_RESULT = asyncio.Future.set_result
_FUTURE_DONE = asyncio.Future.done
_is_none = partial(is_, None)
_FEW = 8  # fewer tasks than this are handled one by one (the bulk set-up costs more)
_POPLEFT = deque.popleft
_TASK_OF, _STATE_OF, _TIME_OF, _SLOT_OF = (itemgetter(i) for i in range(4))  # an outcome


def take_outcomes(done: deque, most: int) -> list:
    """Up to ``most`` ``(task, state, time, slot)`` outcomes from the left of ``done``
    (other threads only append, so the ones counted are there)."""
    return list(map(_POPLEFT, repeat(done, min(len(done), most))))


def _no_emit(event: tuple) -> None:
    """Event sink of a backend used without a session."""


class BaseBackend(ABC):
    """Shared life cycle, callbacks and task bookkeeping of a backend."""

    #: Task kinds this backend runs: "function", "executable", "ai".
    task_kinds: frozenset[str] = frozenset({"function", "executable"})
    #: Events pending in the session's stream before one of this backend's finished
    #: batches delivers them at once (statistics, journal, dashboards); fewer are left to
    #: the stream's 0.1 s timer, off the critical path of the next completions.
    flush_min: int = 1_000

    def __init__(self, name: str):
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise SessionError(f"backend name must be a non-empty string without spaces, "
                               f"got {name!r}; pass name=\"my_backend\"")
        self._name = name
        self.emit: Callable[[tuple], None] = _no_emit
        self._attached_emit: Any = None  # the emit attach() gave, with its run form:
        self._stream_run: Callable[..., None] | None = None  # EventStream.emit_run
        self._stream_events: Callable[[list], None] | None = None  # .emit_events
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
               work_dir: str | None = None, emit_run: Callable[..., None] | None = None,
               emit_events: Callable[[list], None] | None = None) -> None:
        """Send this backend's events to ``emit`` (the session's event stream), runs of
        them to ``emit_run`` and lists of them to ``emit_events`` (``EventStream.emit_run``
        and ``.emit_events``; by default through ``emit``)."""
        self.emit = emit
        self._attached_emit = emit
        self._stream_run = emit_run
        self._stream_events = emit_events
        self._wake_session = wake
        self._work_dir = work_dir

    def emit_run(self, times: Any, uids: list, state: str, backend: str,
                 slots: Any = None) -> None:
        """Emit ``state`` for every task in ``uids`` at once (``times``/``slots``: one value,
        or a list per task). The session's stream keeps it as one run (``EventStream.
        emit_run``); an ``emit`` replaced since ``attach`` still gets every event."""
        run = self._stream_run
        if run is not None and self.emit is self._attached_emit:
            run(times, uids, state, backend, slots)
            return
        deque(map(self.emit, run_events(times, uids, state, backend, slots)), maxlen=0)

    def emit_events(self, events: list[tuple]) -> None:
        """Emit event tuples of one state (a drain's RUNNING events) at once: the session's
        stream may keep them as one run; an ``emit`` replaced since ``attach`` gets each."""
        many = self._stream_events
        if many is not None and self.emit is self._attached_emit:
            many(events)
            return
        deque(map(self.emit, events), maxlen=0)

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
        if len(tasks) < _FEW:  # one task at a time (an agentic loop): no set-up
            now, live, name = time.time(), self._live, self._name
            for task in tasks:
                live[task["uid"]] = task
                task["state"] = QUEUED
                self.emit((now, task["uid"], QUEUED, name, None))
        else:
            uids = list(map(_UID, tasks))
            self._live.update(zip(uids, tasks, strict=True))
            deque(map(setitem, tasks, repeat("state"), repeat(QUEUED)), maxlen=0)
            self.emit_run(time.time(), uids, QUEUED, self._name, None)
        if self._callbacks:
            for task in tasks:
                self._notify(task, QUEUED)

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

    def _notify(self, task: dict, state: str) -> None:
        for cb in self._callbacks:
            try:
                cb(task, state)
            except Exception:
                log.exception("callback %r of backend %s failed", cb, self.name)

    def _finish(self, task: dict, state: str, now: float, slot: object = None,
                reason: str | None = None) -> None:
        """Move ``task`` to a terminal state (on the loop) and resolve its future."""
        uid = task["uid"]
        if self._live.pop(uid, None) is None and task["state"] in (DONE, FAILED, CANCELED):
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

    def _finish_outcomes(self, outcomes: list) -> bool:
        """Finish ``(task, state, time, slot)`` outcomes that are all DONE at once (claims
        released); False if any needs ``_finish`` (see ``_finish_done``)."""
        if len(outcomes) < _FEW or \
                list(map(_STATE_OF, outcomes)).count(DONE) != len(outcomes):
            return False
        tasks = list(map(_TASK_OF, outcomes))
        deque(map(self._claims.pop, map(_UID, tasks), repeat(None)), maxlen=0)
        return self._finish_done(tasks, list(map(_TIME_OF, outcomes)),
                                 list(map(_SLOT_OF, outcomes)))

    def _finish_done(self, tasks: list, times: Sequence[float], slots: list | object) -> bool:
        """Finish ``tasks`` as DONE in C-level passes (the bulk of a busy drain).

        Only for the plain case: no callbacks, every task live here (once) and bound to a
        pending asyncio future. Returns False otherwise, the tasks' states unchanged (some may
        have left ``_live``): the caller then finishes them one by one with ``_finish``,
        which finishes a non-final task whether or not it is still live. ``slots``: a list,
        or one for all.
        """
        if self._callbacks:
            return False
        futs = list(map(getattr, tasks, repeat("_future"), repeat(None)))
        if set(map(type, futs)) != {asyncio.Future} or any(map(_FUTURE_DONE, futs)):
            return False
        uids = list(map(_UID, tasks))
        if any(map(_is_none, map(self._live.pop, uids, repeat(None)))):
            return False  # not live here, or twice in the run
        deque(map(setitem, tasks, repeat("state"), repeat(DONE)), maxlen=0)
        self.emit_run(list(times), uids, DONE, self._name, slots)
        deque(map(_SET_RESULT, futs, tasks), maxlen=0)
        return True


def result_text(value: Any) -> str:
    """A function's return value as its task's ``stdout`` (``repr`` when ``str()`` fails:
    an object whose ``__str__`` raises must not fail the task)."""
    try:
        return str(value)
    except Exception:
        return object.__repr__(value)


def _kind(task: dict) -> str:
    if task.get("prompt") is not None:
        return "ai"
    if task.get("function") is not None:
        return "function"
    return "executable"
