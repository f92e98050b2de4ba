"""The backend contract every runtime implements.

A backend is awaitable (``await backend`` initialises it and returns it), accepts tasks
with ``submit_tasks`` (returning once they are queued, never waiting for them to run) and
``cancel_task``, and stops with ``shutdown``; ``capacity()`` is its number of slots, for
utilisation. Its workers only ``report`` what happened; the task life cycle and the one
drain (``api.lifecycle.TaskLifecycle``, a base of ``BaseBackend``) turn the reports into
state changes. A new backend writes ``_start``, ``submit_tasks``, ``cancel_task``,
``_stop`` and where its outcomes come from; nothing else. A backend written for RHAPSODY
(a subclass of ``api.contract.BackendContract`` only) runs through ``api.adopted``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from .contract import BackendContract
from .errors import BackendError, BackendNotStartedError, SessionError, TaskExecutionError
from .lifecycle import DONE_RUN, TaskLifecycle
from .state_map import StateMapper
from .states import CANCELED, FAILED, SUBMITTED

__all__ = ["CANCELED_CLAIM", "DONE_RUN", "BaseBackend", "record_failure", "result_text"]

CANCELED_CLAIM = object()  # a claim marker: the task was canceled before a worker took it

log = logging.getLogger(__name__)


class BaseBackend(TaskLifecycle, BackendContract):
    """Shared life cycle, callbacks, task bookkeeping and drain of a backend.

    RHAPSODY's contract (``api.contract``) with five of its methods implemented here; a
    subclass writes ``_start``, ``capacity``, ``submit_tasks`` and ``cancel_task``.
    """

    #: Task kinds this backend runs: "function", "executable", "ai".
    task_kinds: frozenset[str] = frozenset({"function", "executable"})
    #: Events pending in the session's stream before one of this backend's finished
    #: batches delivers them at once (statistics, journal, dashboards); fewer are left to
    #: the stream's 0.1 s timer, off the critical path of the next completions.
    flush_min: int = 1_000
    #: Tools built on RHAPSODY's backends (RADICAL AsyncFlow) read these: a backend on a
    #: shared filesystem has no data to link between tasks.
    supports_implicit_data_linking: bool = False
    supports_explicit_data_linking: bool = False
    #: Task states are the engine's own (``get_task_states_map()`` is the identity).
    speaks_main_states: bool = True

    def __init__(self, name: str):
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise SessionError(f"backend name must be a non-empty string without spaces, "
                               f"got {name!r}; pass name=\"my_backend\"")
        self._name = name
        self._init_lifecycle()
        self._callbacks: list[Callable[[dict, str], None]] = []
        self._live: dict[str, Any] = {}
        # uid -> who runs it, or CANCELED_CLAIM: workers and cancel race through
        # ``self._claims.setdefault(uid, me)``; whoever gets there first decides
        self._claims: dict[str, Any] = {}
        self._backend_state = "NEW"
        self._init_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_session: Callable[[], None] | None = None
        self._work_dir: str = os.getcwd()  # where capture_stdio files go; set on attach
        self.is_attached = False  # RHAPSODY's names: registered with a session or engine
        self.attached_to: list[str] = []  # uids of the sessions/engines it served, in order

    # -- identity and life cycle -------------------------------------------------------
    @property
    def name(self) -> str:
        """The name tasks use to route here (``task.backend``)."""
        return self._name

    def __await__(self):
        return self.initialize().__await__()

    @classmethod
    async def create(cls, *args: Any, **kwargs: Any) -> BaseBackend:
        """Build and initialise a backend in one call (RHAPSODY's factory)."""
        return await cls(*args, **kwargs).initialize()

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
    def backend_state(self) -> str:
        """The life-cycle state now, read without awaiting (``await state()`` says the
        same): ``"NEW"``, ``"STARTING"``, ``"RUNNING"``, ``"SHUTDOWN"`` or ``"FAILED"``.
        Safe from any thread (a plain read); for displays, registries, reprs."""
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

    def fail_live(self, reason: str) -> None:
        """The runtime is lost: every task still live FAILS with ``reason`` (on the loop).

        Outcomes already reported are drained first and stay as they are; the backend's
        state becomes FAILED; each task's stderr and exception name the reason.
        """
        self._drain()
        if self._backend_state == "RUNNING":
            self._backend_state = "FAILED"
        now = time.time()
        for task in list(self._live.values()):
            task["stderr"] = (task.get("stderr") or "") + f"[rhapsody_lab] {reason}"
            task["exception"] = BackendError(self.name, f"task {task['uid']}: {reason}")
            self._claims.pop(task["uid"], None)
            self._finish(task, FAILED, now)

    # -- what the session uses ---------------------------------------------------------
    def attach(self, emit: Callable[[tuple], None], wake: Callable[[], None] | None = None,
               work_dir: str | None = None, emit_run: Callable[..., None] | None = None,
               session_uid: str | None = None) -> None:
        """Send this backend's events to ``emit`` (the session's event stream) and runs of
        them to ``emit_run`` (``EventStream.emit_run``; by default through ``emit``)."""
        if session_uid is not None:
            self.is_attached = True
            self.attached_to.append(session_uid)
        self.emit = emit
        self._attached_emit = emit
        self._stream_run = emit_run
        self._wake_session = wake
        if work_dir is not None:
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

    def get_task_states_map(self) -> StateMapper:
        """RHAPSODY's state vocabulary of this backend (``mapper.DONE``,
        ``mapper.terminal_states``): the engine's states, mapped as themselves."""
        return StateMapper(self)

    def live_task_states(self) -> dict[str, str]:
        """State of every live task, by uid."""
        return {uid: t["state"] for uid, t in self._live.items()}

    def task_state_cb(self, task: dict, state: str) -> None:
        """Call the registered callbacks with ``(task, state)`` (RHAPSODY's hook)."""
        for cb in list(self._callbacks):
            cb(task, state)

    def build_task(self, task: dict) -> None:
        """Check that this backend can run ``task`` (RHAPSODY's hook; raises if not)."""
        self.check_task(task)

    def link_implicit_data_deps(self, src_task: dict, dst_task: dict) -> None:
        """Nothing to link: tasks share the filesystem (``supports_*_data_linking``)."""

    def link_explicit_data_deps(self, src_task: dict | None = None,
                                dst_task: dict | None = None, file_name: str | None = None,
                                file_path: str | None = None) -> dict | None:
        """Nothing to stage on a shared filesystem; returns None."""
        return None

    # -- helpers for implementations ---------------------------------------------------
    def _ensure_running(self) -> None:
        if self._backend_state != "RUNNING":
            if self._backend_state == "NEW":
                raise BackendNotStartedError(
                    self.name, f"{type(self).__name__} must be awaited before use: not "
                    "initialised; `await backend` first (a Session does it for you on submit)")
            raise BackendError(self.name, f"backend is {self._backend_state.lower()}; "
                               "it accepts no more tasks")

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
