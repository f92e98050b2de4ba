"""The Session: routes tasks to backends, binds their futures, owns the event stream.

``submit_tasks`` validates and routes the whole call first (nothing is submitted if any
task is refused), then hands each backend its tasks and returns the futures in the
caller's order as soon as they are queued. Large calls yield to the event loop between
chunks so a notebook stays responsive.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterable
from typing import Any

from .backend import BaseBackend, _kind
from .errors import SessionError, TaskValidationError
from .events import EventStream, Subscriber
from .statistics import Statistics
from .states import NEW, SUBMITTED
from .task import BaseTask

__all__ = ["Session"]

_session_counter = itertools.count(0)
_CHUNK = 2_000  # tasks handled between two yields to the event loop


class Session:
    """Connects tasks to backends; ``async with Session([backend]) as s: ...``."""

    def __init__(self, backends: Iterable[BaseBackend] | BaseBackend | None = None,
                 uid: str | None = None, work_dir: str | os.PathLike | None = None):
        if uid is not None and (not isinstance(uid, str) or not uid):
            raise SessionError(f"uid must be a non-empty string, got {uid!r}")
        self.uid = uid or f"session.{next(_session_counter):04d}"
        if work_dir is not None and not isinstance(work_dir, str | os.PathLike):
            raise SessionError(f"work_dir must be a path, got {type(work_dir).__name__}")
        self.work_dir = os.fspath(work_dir) if work_dir is not None else os.getcwd()
        self.backends: dict[str, BaseBackend] = {}
        self.events = EventStream()
        self._stats = Statistics()
        self.events.subscribe(self._stats, inline=True)
        self._closed = False
        self.created = time.time()
        if isinstance(backends, BaseBackend):
            backends = [backends]
        if backends is not None:
            if not isinstance(backends, Iterable) or isinstance(backends, str | dict):
                raise SessionError(
                    f"backends must be a list of backends, got {type(backends).__name__}; "
                    "write Session(backends=[ConcurrentExecutionBackend()])")
            for b in backends:
                self.add_backend(b)

    # -- backends ----------------------------------------------------------------------
    def add_backend(self, backend: BaseBackend) -> None:
        """Register ``backend``; tasks reach it by ``task.backend = backend.name``."""
        if self._closed:
            raise SessionError(f"session {self.uid} is closed; create a new Session")
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
        self.backends[backend.name] = backend
        backend.attach(self.events.emit, self.events.flush_soon, self.work_dir)

    async def start(self) -> Session:
        """Initialise every backend that is not running yet (concurrently)."""
        self._check_open()
        self.events.bind(asyncio.get_running_loop())
        todo = [b.initialize() for b in self.backends.values() if not b.is_running]
        if todo:
            await asyncio.gather(*todo)
        return self

    async def __aenter__(self) -> Session:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SessionError(f"session {self.uid} is closed; create a new Session")

    # -- routing -----------------------------------------------------------------------
    def _route(self, task: Any, default: dict[str, BaseBackend | None]) -> BaseBackend:
        if not isinstance(task, BaseTask):
            raise TaskValidationError(
                task.get("uid") if isinstance(task, dict) else None,
                f"expected a ComputeTask or AITask, got {type(task).__name__}; "
                "build one with ComputeTask(...) or BaseTask.from_dict(d)")
        name = task["backend"]
        if name is not None:
            backend = self.backends.get(name)
            if backend is None:
                raise SessionError(
                    f"Backend '{name}' requested by task {task['uid']} not found; "
                    f"registered backends: {sorted(self.backends)}")
            if not backend.can_run(task):
                raise TaskValidationError(
                    task["uid"], f"backend '{name}' cannot run {_kind(task)} tasks; route it "
                    f"to one of {self._names_for(_kind(task))}", field="backend")
            return backend
        kind = _kind(task)
        if kind not in default:
            default[kind] = next((b for b in self.backends.values() if b.can_run(task)), None)
        backend = default[kind]
        if backend is None:
            if not self.backends:
                raise SessionError("this session has no backend; add one with "
                                   "session.add_backend(ConcurrentExecutionBackend())")
            need = "an inference backend (VllmInferenceBackend)" if kind == "ai" \
                else "an execution backend (ConcurrentExecutionBackend)"
            raise TaskValidationError(
                task["uid"], f"no registered backend runs {kind} tasks; add {need}",
                field="backend")
        return backend

    def _names_for(self, kind: str) -> list[str]:
        return [n for n, b in self.backends.items() if kind in b.task_kinds]

    # -- submission --------------------------------------------------------------------
    async def submit_tasks(self, tasks: Iterable[BaseTask]) -> list[asyncio.Future]:
        """Route and queue ``tasks``; return their futures (in order) once accepted."""
        self._check_open()
        if isinstance(tasks, BaseTask) or not isinstance(tasks, Iterable):
            raise SessionError("submit_tasks expects a list of tasks; write "
                               "submit_tasks([task])")
        tasks = tasks if isinstance(tasks, list) else list(tasks)
        loop = asyncio.get_running_loop()
        self.events.bind(loop)
        # 1. validate and route everything before anything is submitted
        default: dict[str, BaseBackend | None] = {}
        routed: list[BaseBackend] = []
        seen: set[str] = set()
        for i, task in enumerate(tasks):
            backend = self._route(task, default)
            uid = task["uid"]
            state = task["state"]
            if state != NEW:
                raise SessionError(
                    f"task {uid} was already submitted (state {state}); create a new task "
                    "to run the same work again")
            if uid in seen or backend.is_live(uid):
                raise TaskValidationError(uid, "another task with this uid is already "
                                          "submitted; leave uid unset for an automatic one",
                                          field="uid")
            seen.add(uid)
            backend.check_task(task)
            routed.append(backend)
            if i % _CHUNK == _CHUNK - 1:
                await asyncio.sleep(0)
        for backend in set(routed):
            if not backend.is_running:
                await backend.initialize()
        # 2. bind futures, record SUBMITTED, hand each backend its share
        futures: list[asyncio.Future] = []
        create = loop.create_future
        emit = self.events.emit
        for start in range(0, len(tasks), _CHUNK):
            groups: dict[BaseBackend, list] = {}
            now = time.time()
            for task, backend in zip(tasks[start:start + _CHUNK],
                                     routed[start:start + _CHUNK], strict=True):
                fut = create()
                task.bind_future(fut)
                futures.append(fut)
                name = backend.name
                task["backend"] = name
                task["state"] = SUBMITTED
                emit((now, task["uid"], SUBMITTED, name, None))
                group = groups.get(backend)
                if group is None:
                    groups[backend] = [task]
                else:
                    group.append(task)
            for backend, group in groups.items():
                await backend.submit_tasks(group)
            if start + _CHUNK < len(tasks):
                await asyncio.sleep(0)
        self.events.flush_soon()
        return futures

    async def wait_tasks(self, tasks: Iterable[BaseTask], timeout: float | None = None
                         ) -> list[BaseTask]:
        """Wait until every task is terminal; never raises for a failed task.

        Raises ``asyncio.TimeoutError`` after ``timeout`` seconds (tasks keep running).
        """
        tasks = list(tasks)
        if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
            raise SessionError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        futs = []
        for t in tasks:
            fut = getattr(t, "_future", None)
            if fut is None:
                raise SessionError(f"task {t.get('uid')} was not submitted; "
                                   "submit it with session.submit_tasks([...]) first")
            if not fut.done():
                futs.append(fut)
        if futs:
            _done, pending = await asyncio.wait(futs, timeout=timeout)
            if pending:
                raise asyncio.TimeoutError(
                    f"wait_tasks timed out after {timeout}s: {len(tasks) - len(pending)}/"
                    f"{len(tasks)} tasks finished")
        return tasks

    async def cancel_task(self, task: BaseTask | str) -> bool:
        """Cancel one task (or uid) wherever it runs; True if it will not complete."""
        uid = task if isinstance(task, str) else task["uid"]
        for backend in self.backends.values():
            if backend.is_live(uid):
                return await backend.cancel_task(uid)
        return False

    async def cancel_tasks(self, tasks: Iterable[BaseTask | str]) -> int:
        """Cancel several tasks; returns how many were canceled."""
        n = 0
        for t in tasks:
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

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Shut down every backend (running tasks become CANCELED) and the event stream."""
        if self._closed:
            return
        self._closed = True
        results = await asyncio.gather(*(b.shutdown() for b in self.backends.values()),
                                       return_exceptions=True)
        self.events.close()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    # -- display -----------------------------------------------------------------------
    def __repr__(self) -> str:
        counts = {k: v for k, v in self._stats.counts.items() if v > 0}
        state = "closed" if self._closed else "open"
        return f"<Session {self.uid} {state} backends={list(self.backends)} tasks={counts}>"
