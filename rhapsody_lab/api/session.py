"""The Session: its backends, the event stream and statistics, waiting, cancel, close.

``submit_tasks`` (validation, routing, futures and hand-off) is in ``api.submission``,
mixed in here; a task's states are owned by its backend's life cycle (``api.lifecycle``).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import time
from collections.abc import Iterable
from typing import Any

from . import gcfreeze
from .adopted import AdoptedBackend
from .backend import BaseBackend
from .claims import HandOff, unclaim
from .contract import BackendContract
from .data import DataBackends, is_data_backend
from .dict_tasks import future_of
from .errors import SessionError
from .events import EventStream, Subscriber
from .extensions import provider
from .service_hooks import ServiceHooks
from .state_manager import TaskStateManager
from .states import CANCELED, NEW
from .statistics import Statistics
from .submission import Submission
from .task import BaseTask
from .telemetry_hooks import TelemetryHooks

__all__ = ["Session", "TaskStateManager"]  # the manager: RHAPSODY's path api.session

_session_counter = itertools.count(0)
_FLUSH_BUDGET = 0.004  # seconds of event delivery per backend batch
_FLUSH_LIMIT = 4_000  # events delivered per flush call (bounds one loop callback)


class Session(Submission, TelemetryHooks, ServiceHooks):
    """Connects tasks to backends; ``async with Session([backend]) as s: ...``.

    ``work_dir`` (default: the current folder) is created if missing, like ``mkdir -p``.
    """

    def __init__(self, backends: Iterable[BaseBackend] | BaseBackend | None = None,
                 uid: str | None = None, work_dir: str | os.PathLike | None = None):
        if uid is not None and (not isinstance(uid, str) or not uid):
            raise SessionError(f"uid must be a non-empty string, got {uid!r}")
        self.uid = uid or f"session.{next(_session_counter):04d}"
        if work_dir is not None and not isinstance(work_dir, str | os.PathLike):
            raise SessionError(f"work_dir must be a path, got {type(work_dir).__name__}")
        self.work_dir = _work_dir(work_dir) if work_dir is not None else os.getcwd()
        self.backends: dict[str, BaseBackend] = {}
        self.data_backends = DataBackends()  # Redis, DDict...: no tasks (api.data)
        self.events = EventStream()
        self._stats = Statistics()
        self.events.subscribe(self._stats, inline=True, on_runs=self._stats.fold_items)
        self._closed = False
        self._pending: list[HandOff] = []  # big submits still being handed to backends
        self._handoffs: set[asyncio.Task] = set()
        self._gc_held = False  # this session holds the process-wide gc freeze (gcfreeze)
        self._gc_waves = False  # big submits overlapped: no freeze again until idle
        self._default_routes: dict[str, BaseBackend | None] = {}  # kind -> first backend
        self._future_factory: tuple[Any, Any] = (None, None)  # (loop, create a future)
        self._submitting = 0  # submit_tasks calls between validation and hand-off
        self._router: Any = None  # a policy's router (api.routing), set by from_policy
        self._dict_tasks: dict[str, tuple[dict, asyncio.Future]] = {}  # uid -> plain dict
        self.created = time.time()
        if isinstance(backends, BackendContract) or is_data_backend(backends):
            backends = [backends]
        if backends is not None:
            if not isinstance(backends, Iterable) or isinstance(backends, str | dict):
                raise SessionError(
                    f"backends must be a list of backends, got {type(backends).__name__}; "
                    "write Session(backends=[ConcurrentExecutionBackend()])")
            for b in backends:
                self.add_backend(b)

    # -- backends ----------------------------------------------------------------------
    @classmethod
    def from_policy(cls, policy: Any, allocation: Any = None, uid: str | None = None,
                    work_dir: str | os.PathLike | None = None) -> Session:
        """A session whose backends share ``allocation`` by ``policy`` (a path or a dict).

        The policy is validated (``PolicyError`` naming the key) before any backend is
        built; backends start with the session (``async with``); see ``rhapsody_lab.policy``,
        which provides the backends and the router (``api.extensions``, ``"policy"``).
        """
        backends, router = provider("policy")(policy, allocation)
        session = cls(backends, uid=uid, work_dir=work_dir)
        session._router = router
        return session

    def add_backend(self, backend: BaseBackend) -> None:
        """Register ``backend``; tasks reach it by ``task.backend = backend.name``.

        A backend written for RHAPSODY (only its ``BaseBackend`` contract) is registered
        wrapped (``api.adopted.AdoptedBackend``; the object given is its ``inner``).
        """
        if self._closed:
            raise SessionError(f"session {self.uid} is closed; create a new Session")
        if is_data_backend(backend):  # a data backend (api.data): started and closed only
            return self.data_backends.add(backend, self)
        if isinstance(backend, BackendContract) and not isinstance(backend, BaseBackend):
            if any(getattr(b, "inner", None) is backend for b in self.backends.values()):
                return
            backend = AdoptedBackend(backend)  # written for RHAPSODY
        if not isinstance(backend, BaseBackend):
            hint = " (did you pass the class? write ConcurrentExecutionBackend())" \
                if isinstance(backend, type) else ""
            raise SessionError(f"expected a rhapsody_lab backend, got "
                               f"{type(backend).__name__}{hint}")
        if backend.name in self.backends:
            if self.backends[backend.name] is backend:
                return
            raise SessionError(f"a backend named '{backend.name}' is already registered; "
                               "give the second one another name=")
        owners = backend.attached_to  # a backend serves one session (events, shutdown)
        if owners and self.uid not in owners:
            raise SessionError(
                f"backend '{backend.name}' already belongs to session {owners[-1]}: its "
                "events, futures and shutdown are that session's; create a new backend for "
                f"session {self.uid} (e.g. {type(backend).__name__}(name=...))")
        self.backends[backend.name] = backend
        self._default_routes.clear()
        backend.attach(self.events.emit, functools.partial(self._flush_events,
                                                           backend.flush_min), self.work_dir,
                       emit_run=self.events.emit_run, session_uid=self.uid)
        self._telemetry_backend_added(backend)

    def _flush_events(self, least: int) -> None:
        """Backends call this after finishing a batch: observation keeps pace with dispatch.

        A backlog under ``least`` events (the backend's ``flush_min``) is left to the
        stream's timer (every 0.1 s), keeping observer work off the critical path.
        """
        if self._gc_held or self._gc_waves:
            self._release_gc_if_idle()
        if self.events.pending < least:
            return
        t0 = time.perf_counter()
        flush = self.events.flush
        while flush(limit=_FLUSH_LIMIT) and time.perf_counter() - t0 < _FLUSH_BUDGET:
            pass

    def _release_gc_if_idle(self) -> None:
        """Give the gc freeze back once nothing of this session is in flight."""
        if self._submitting or self._pending or any(
                b._live for b in self.backends.values()):
            return
        self._gc_waves = False
        if self._gc_held:
            self._gc_held = False
            gcfreeze.release(self)

    def _hold_gc(self) -> None:
        """A big submit: freeze the heap, unless big submits overlap (see gcfreeze)."""
        if self._gc_waves or not gcfreeze.enabled():
            return
        if not self._gc_held:
            self._gc_held = gcfreeze.hold(self)  # the user's tasks are long-lived anyway
            return
        # Another big batch while the first still runs (waves): finished tasks the user
        # drops would stay frozen garbage (task <-> future cycles) until the session is
        # idle, and waves may never leave it idle. Give the heap back to the collector.
        self._gc_held = False
        self._gc_waves = True
        gcfreeze.release(self)

    async def start(self) -> Session:
        """Initialise every backend that is not running yet (concurrently)."""
        self._check_open()
        self.events.bind(asyncio.get_running_loop())
        todo = [b.initialize() for b in self.backends.values() if not b.is_running]
        await asyncio.gather(*todo, self.data_backends.start_all())
        return self

    async def __aenter__(self) -> Session:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SessionError(f"session {self.uid} is closed; create a new Session")

    async def wait_tasks(self, tasks: Iterable[BaseTask], timeout: float | None = None
                         ) -> list[BaseTask]:
        """Wait until every task is terminal; never raises for a failed task.

        Raises ``asyncio.TimeoutError`` after ``timeout`` seconds (tasks keep running).
        """
        tasks = _task_list("wait_tasks", tasks)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(
                timeout, int | float) or not timeout >= 0):
            raise SessionError(f"wait_tasks: timeout must be a number of seconds >= 0 or "
                               f"None, got {timeout!r}")
        if timeout == float("inf"):
            timeout = None
        futs = []
        for i, t in enumerate(tasks):
            if not isinstance(t, BaseTask | dict):
                raise SessionError(f"wait_tasks: tasks[{i}] must be a task, got "
                                   f"{type(t).__name__} {t!r}; pass the tasks given to "
                                   "submit_tasks (not their uids)")
            fut = t._future if isinstance(t, BaseTask) else future_of(self._dict_tasks, t)
            if fut is None:
                raise SessionError(f"task {t.get('uid')} was not submitted; "
                                   "submit it with session.submit_tasks([...]) first")
            if not fut.done():
                futs.append(fut)
        if futs:
            await _wait_all(futs, timeout, len(tasks))
        return tasks

    async def cancel_task(self, task: BaseTask | dict | str) -> bool:
        """Cancel one task (or uid) wherever it runs; True if it will not complete."""
        if isinstance(task, BaseTask) or future_of(self._dict_tasks, task) is not None:
            uid = task["uid"]
        elif isinstance(task, str) and task:
            uid = task
        else:
            raise SessionError(f"cancel_task: task must be a task or its uid (a non-empty "
                               f"str), got {type(task).__name__} {task!r}")
        for backend in self.backends.values():
            if backend.is_live(uid):
                return await backend.cancel_task(uid)
        for job in self._pending:
            if uid in job.uids:
                for i in range(job.next, len(job.tasks)):
                    if job.tasks[i]["uid"] == uid and job.tasks[i]["state"] == NEW:
                        self._cancel_unhanded(job.tasks[i], job.routed[i],
                                              "canceled before it reached its backend")
                        return True
        return False

    def _cancel_unhanded(self, task: BaseTask, backend: BaseBackend, reason: str) -> None:
        task["backend"] = backend.name
        backend._finish(task, CANCELED, time.time(), reason=reason)

    async def cancel_tasks(self, tasks: Iterable[BaseTask | str]) -> int:
        """Cancel several tasks; returns how many were canceled."""
        n = 0
        for t in _task_list("cancel_tasks", tasks):
            n += await self.cancel_task(t)
        return n

    # -- observation -------------------------------------------------------------------
    def subscribe(self, fn: Subscriber, *, inline: bool = False) -> Subscriber:
        """Receive every later batch of events ``(time, uid, state, backend, slot)``."""
        return self.events.subscribe(fn, inline=inline)

    def get_statistics(self) -> dict[str, Any]:
        """Counts by state, latency summaries and throughput, from the event stream."""
        self.events.flush(limit=None)
        snap = self._stats.snapshot()
        snap["capacity"] = {n: b.capacity() for n, b in self.backends.items()}
        return snap

    def dashboard(self, plots: list[str] | None = None, interval: float = 0.5) -> Any:
        """Live Bokeh dashboard of this session for a notebook (display the result).

        Needs the ``dashboard`` extra; ``rhapsody_lab.dashboard`` provides it (``api.
        extensions``, ``"dashboard"``), so the engine itself never loads Bokeh.
        """
        try:
            show = provider("dashboard")
            return show(self, plots=plots, interval=interval)
        except ImportError as exc:
            raise SessionError(f"the dashboard needs Bokeh ({exc}); install it with "
                               "pip install 'rhapsody-lab[dashboard]'") from exc

    def counts(self) -> dict[str, int]:
        """Tasks by state as delivered so far (cheap: never flushes the event backlog)."""
        return {k: v for k, v in self._stats.counts.items() if v > 0}

    async def cancel_all(self) -> int:
        """Cancel every task this session still has in flight; returns how many."""
        n = 0
        for job in list(self._pending):
            for task in job.tasks[job.next:]:
                if task["state"] == NEW:
                    n += await self.cancel_task(task)
        for backend in self.backends.values():
            n += await backend.cancel_all_tasks()
        return n

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Shut down every backend (running tasks become CANCELED) and the event stream."""
        if self._closed:
            return
        self._closed = True
        if self._gc_held:
            self._gc_held = False
            gcfreeze.release(self)
        for job in list(self._handoffs):
            job.cancel()
        for pending in self._pending:
            for task, backend in zip(pending.tasks[pending.next:],
                                     pending.routed[pending.next:], strict=True):
                if task["state"] == NEW:
                    self._cancel_unhanded(task, backend, "session closed before it reached "
                                          "its backend")
            unclaim(pending.claim)  # its job may be canceled before it ever ran
        results = await asyncio.gather(*(b.shutdown() for b in self.backends.values()),
                                       return_exceptions=True)
        results += await self.data_backends.shutdown_all()  # after the tasks using them
        if self._services is not None:
            results.append(*(await asyncio.gather(self._services.stop_all(),
                                                  return_exceptions=True)))
        while self.events.flush(limit=_FLUSH_LIMIT):
            await asyncio.sleep(0)  # deliver the backlog without blocking the loop
        await self._stop_telemetry(then_close=self.events)  # after the backlog: CANCELED in
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    # -- display -----------------------------------------------------------------------
    def __repr__(self) -> str:
        counts = {k: v for k, v in self._stats.counts.items() if v > 0}
        state = "closed" if self._closed else "open"
        return f"<Session {self.uid} {state} backends={list(self.backends)} tasks={counts}>"


def _task_list(call: str, tasks: Any) -> list:
    """``tasks`` as a list, or SessionError naming the parameter (a task, a str, an int)."""
    if isinstance(tasks, BaseTask | str | dict) or not isinstance(tasks, Iterable):
        raise SessionError(f"{call}: tasks must be a list of tasks, got "
                           f"{type(tasks).__name__} {tasks!r}; write {call}([task])")
    return list(tasks)


def _work_dir(work_dir: Any) -> str:
    """The session's folder, created (with its parents) like ``mkdir -p`` if missing.

    On a cluster the usual ``work_dir`` is a fresh run folder on scratch, so it is created
    here, at construction; a path that cannot be a folder fails now, not at the first task.
    """
    if not isinstance(work_dir, str | os.PathLike) or not os.fspath(work_dir):
        raise SessionError(f"work_dir must be a folder path, got {work_dir!r}")
    path = os.path.abspath(os.path.expanduser(os.fspath(work_dir)))
    if os.path.exists(path) and not os.path.isdir(path):
        raise SessionError(f"work_dir {path!r} exists and is not a folder; pass a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise SessionError(f"work_dir {path!r} does not exist and cannot be created "
                           f"({exc.strerror}); create it or pass another work_dir=") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise SessionError(f"work_dir {path!r} is not writable; pass a folder you can "
                           "write to")
    return path


async def _wait_all(futs: list[asyncio.Future], timeout: float | None, total: int) -> None:
    """Wait for every future without one loop callback per future.

    Awaiting them in order suspends only on the first still-pending one; completions
    arrive in batches, so this wakes about once per batch (``asyncio.wait`` or ``gather``
    would schedule one callback per task, which at 100,000 tasks floods the loop).
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    for i, fut in enumerate(futs):
        if fut.done():
            continue
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            done = False
        else:
            finished, _ = await asyncio.wait((fut,), timeout=remaining)  # never cancels fut
            done = bool(finished)
        if not done:
            left = sum(not f.done() for f in futs[i:])
            raise asyncio.TimeoutError(
                f"wait_tasks timed out after {timeout}s: {total - left}/{total} tasks "
                "finished")

