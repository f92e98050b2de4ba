"""The Session: routes tasks to backends, binds their futures, owns the event stream.

``submit_tasks`` validates and routes the whole call first (nothing is submitted if any
task is refused), then hands each backend its tasks and returns the futures in the
caller's order as soon as they are queued. Large calls yield to the event loop between
chunks so a notebook stays responsive.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import operator
import os
import time
from collections.abc import Iterable
from itertools import repeat, starmap
from typing import Any

from . import bulk, gcfreeze
from .backend import BaseBackend, _kind
from .errors import SessionError, TaskValidationError
from .events import EventStream, Subscriber
from .extensions import provider
from .states import CANCELED, NEW, SUBMITTED
from .statistics import Statistics
from .task import BaseTask, ComputeTask

__all__ = ["Session"]

_session_counter = itertools.count(0)
# The uids of every submit_tasks call (any session of this process) from its last check
# until all its tasks are with their backends: a NEW task with a future bound to it is in
# one of these, so a second submit of it is refused without a pass over futures.
_claimed: list[_Claim] = []
_CHUNK = 2_000  # tasks handed to backends between two yields to the event loop
_HANDOFF_CHUNK = 2_000  # tasks handed to backends per step of the background hand-off
_YIELD_AFTER = 0.005  # seconds of submit work between two yields to the event loop
_FLUSH_BUDGET = 0.004  # seconds of event delivery per backend batch
_FLUSH_LIMIT = 4_000  # events delivered per flush call (bounds one loop callback)
_FIRST_HANDOFF = 128  # handed over before submit_tasks returns (enough to fill the slots)
_UID = operator.itemgetter("uid")
_BIND_FUTURE = BaseTask._future.__set__  # task._future = fut, without setattr's lookup
_FUTURE = operator.attrgetter("_future")
_BACKEND = operator.itemgetter("backend")
_STATE = operator.itemgetter("state")
_FUNCTION = operator.itemgetter("function")
_OPTIONS = operator.itemgetter("task_backend_specific_kwargs")
_SMALL = 32  # submits this small skip the chunked, vectorised machinery
_GC_FREEZE_MIN = 5_000  # a submit this big freezes the heap while it runs (see gcfreeze)


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
        self.events.subscribe(self._stats, inline=True, on_runs=self._stats.fold_items)
        self._closed = False
        self._services: Any = None  # a ServiceSet, created with the first service
        self._pending: list[_HandOff] = []  # big submits still being handed to backends
        self._handoffs: set[asyncio.Task] = set()
        self._gc_held = False  # this session holds the process-wide gc freeze (gcfreeze)
        self._gc_waves = False  # big submits overlapped: no freeze again until idle
        self._default_routes: dict[str, BaseBackend | None] = {}  # kind -> first backend
        self._future_factory: tuple[Any, Any] = (None, None)  # (loop, create a future)
        self._submitting = 0  # submit_tasks calls between validation and hand-off
        self._router: Any = None  # a policy's router (api.routing), set by from_policy
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
        self._default_routes.clear()
        backend.attach(self.events.emit, functools.partial(self._flush_events,
                                                           backend.flush_min), self.work_dir,
                       emit_run=self.events.emit_run)

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
    def _route_all(self, tasks: list, to_check: list) -> list[BaseBackend]:
        """Route every task or raise before anything is submitted (the hot loop of submit).

        Tasks their backend must check (AI tasks, tasks with backend-specific options) are
        appended to ``to_check``: they are checked once the backends are running.
        """
        if self._router is not None:  # a policy decides (api.routing)
            return self._router.route_all(self, tasks, to_check)
        default = self._default_routes
        if len(tasks) >= 64:
            backend = self._route_uniform(tasks, default)
            if backend is not None:
                return [backend] * len(tasks)
        routed: list[BaseBackend] = []
        append = routed.append
        last_type = last_backend = None
        last_fn = False
        for task in tasks:
            if task.__class__ is last_type and task["backend"] is None and \
                    task["state"] == NEW and task._future is None \
                    and not task.get("task_backend_specific_kwargs") \
                    and (task.get("function") is not None) is last_fn:
                append(last_backend)  # same kind as the previous task: same default route
                continue
            backend = self._route(task, default)
            state = task["state"]
            if state != NEW or task._future is not None:
                raise SessionError(
                    f"task {task['uid']} was already submitted (state {state}); create a new "
                    "task to run the same work again")
            is_ai = task.get("prompt") is not None
            if is_ai or task.get("task_backend_specific_kwargs"):
                to_check.append((task, backend))  # AI tasks: sampling values, before sending
            append(backend)
            if task["backend"] is None and not task.get("task_backend_specific_kwargs") \
                    and not is_ai:
                last_type, last_backend = task.__class__, backend
                last_fn = task.get("function") is not None
            else:
                last_type = None
        return routed

    def _route_uniform(self, tasks: list, default: dict) -> BaseBackend | None:
        """The one backend of a chunk of alike fresh tasks, checked at C speed; else None.

        Alike: all exactly ``ComputeTask``, NEW, unbound, with no backend named, no
        backend-specific options, and all functions or all executables (unless the first
        backend for either kind is the same). The first task takes the full route (and its
        errors); the rest follow it.
        """
        first = tasks[0]
        if len(set(map(type, tasks))) != 1 or first.__class__ is not ComputeTask or \
                any(map(_BACKEND, tasks)) or any(map(_OPTIONS, tasks)) or \
                set(map(_STATE, tasks)) != {NEW}:
            return None  # (a bound future: see _claim)
        backend = self._route(first, default)
        if all(k in backend.task_kinds for k in ("function", "executable")) and next(
                b for b in self.backends.values() if "executable" in b.task_kinds
                or "function" in b.task_kinds) is backend:
            return backend  # functions and executables both go here by default
        if first["function"] is not None:
            if None in map(_FUNCTION, tasks):
                return None
        elif list(map(_FUNCTION, tasks)).count(None) != len(tasks):
            return None
        return backend

    async def submit_tasks(self, tasks: Iterable[BaseTask]) -> list[asyncio.Future]:
        """Route and queue ``tasks``; return their futures (in order) once accepted.

        Everything is validated first: if any task is refused, none is submitted. The first
        tasks are handed to their backends before this returns, the rest right after, in
        chunks, while the caller goes on (a task is SUBMITTED until its backend has it).
        """
        self._check_open()
        if tasks.__class__ is not list:
            if isinstance(tasks, BaseTask) or not isinstance(tasks, Iterable):
                raise SessionError("submit_tasks expects a list of tasks; write "
                                   "submit_tasks([task])")
            tasks = list(tasks)
        if not tasks:
            return []
        loop = asyncio.get_running_loop()
        self.events.bind(loop)
        if len(tasks) >= _GC_FREEZE_MIN:
            self._hold_gc()
        self._submitting += 1
        try:
            return await self._submit(tasks, loop)
        finally:
            self._submitting -= 1
            if self._gc_held or self._gc_waves:
                self._release_gc_if_idle()  # refused, or everything already finished

    async def _submit(self, tasks: list, loop: asyncio.AbstractEventLoop
                      ) -> list[asyncio.Future]:
        # 1. validate and route everything before anything is submitted
        routed: list[BaseBackend] = []
        to_check: list[tuple[BaseTask, BaseBackend]] = []
        uids: set[str] = set()
        used: set[BaseBackend] = set()
        last_yield = time.perf_counter()
        yielded = False  # other code ran meanwhile: the route's checks may be stale
        for start in range(0, len(tasks), _CHUNK):
            part = tasks[start:start + _CHUNK]
            route = self._route_all(part, to_check)
            routed += route
            if route.count(route[0]) == len(route):
                used.add(route[0])  # the usual case: one backend (identity count, in C)
            else:
                used.update(route)
            uids.update(map(_UID, part))
            if time.perf_counter() - last_yield > _YIELD_AFTER:
                await asyncio.sleep(0)  # a huge call must not freeze the loop (or a notebook)
                last_yield = time.perf_counter()
                yielded = True
        for backend in used:
            if not backend.is_running:
                await backend.initialize()
                yielded = True
        for task, backend in to_check:  # a running backend knows its resources
            backend.check_task(task)
        claim = self._claim(tasks, uids, used, yielded)
        try:
            return await self._bind_and_hand_off(tasks, routed, claim, loop, last_yield)
        finally:
            if claim.owner is None:  # no background hand-off took it over
                _unclaim(claim)

    def _claim(self, tasks: list, uids: set[str], used: set[BaseBackend], yielded: bool
               ) -> _Claim:
        """Refuse a task already submitted or a uid in use, else claim the uids: check and
        claim in one step (no await), so two concurrent submits never both pass."""
        clash = [c for c in _claimed if not c.uids.isdisjoint(uids)]
        if clash and any(c.session is not self for c in clash):
            mine = set(map(id, tasks))  # uids are per session: other sessions clash only
            clash = [c for c in clash if c.session is self or  # by the same task objects
                     not mine.isdisjoint(map(id, c.tasks))]
        if clash or len(uids) != len(tasks) or \
                any(not b._live.keys().isdisjoint(uids) for b in used) or \
                (yielded and (any(map(_FUTURE, tasks)) or set(map(_STATE, tasks)) != {NEW})):
            theirs = {id(t) for c in clash for t in c.tasks}
            again = next((t for t in tasks if id(t) in theirs or t._future is not None
                          or t["state"] != NEW), None)
            if again is not None:  # the same task object, in flight or finished
                raise SessionError(
                    f"task {again['uid']} was already submitted (state {again['state']}); "
                    "create a new task to run the same work again")
            raise TaskValidationError(self._duplicate_uid(tasks), "another task with this "
                                      "uid is already submitted; leave uid unset for an "
                                      "automatic one", field="uid")
        claim = _Claim(self, uids, tasks)
        _claimed.append(claim)
        return claim

    async def _bind_and_hand_off(self, tasks: list, routed: list, claim: _Claim,
                                 loop: asyncio.AbstractEventLoop, last_yield: float
                                 ) -> list[asyncio.Future]:
        # 2. bind a future to every task; the first ones become SUBMITTED now, the rest as
        #    they are handed over (stamped with this call's time)
        factory_loop, create = self._future_factory
        if factory_loop is not loop:
            if type(loop).create_future is asyncio.BaseEventLoop.create_future:
                create = functools.partial(asyncio.Future, loop=loop)
            else:
                create = loop.create_future
            self._future_factory = (loop, create)
        bind = _BIND_FUTURE
        now = time.time()
        futures: list[asyncio.Future] = []
        if len(tasks) <= _SMALL:  # one task at a time (an agentic loop): the short way
            futures = [create() for _ in tasks]
            for task, fut in zip(tasks, futures, strict=True):
                bind(task, fut)
        else:
            try:
                await self._bind_chunks(tasks, futures, create, last_yield)
            except BaseException:  # canceled (or out of memory) while binding: the caller
                for task in tasks:  # never got the futures,
                    bind(task, None)
                for fut in futures:  # so the tasks stay NEW and unbound, as given
                    fut.cancel()
                raise
        if self._gc_held:
            gcfreeze.refreeze(self)  # the futures live as long as the tasks
        # 3. hand the first tasks over now, the rest in the background
        first = _FIRST_HANDOFF
        self._mark_submitted(tasks[:first], routed[:first], now)
        await self._hand_off(tasks[:first], routed[:first])
        if len(tasks) > first:
            pending = claim.owner = _HandOff(claim, tasks[first:], routed[first:])
            self._pending.append(pending)
            job = loop.create_task(self._hand_off_all(pending, now))
            self._handoffs.add(job)
            job.add_done_callback(self._handoffs.discard)
        return futures

    async def _bind_chunks(self, tasks: list, futures: list, create: Any,
                           last_yield: float) -> None:
        """Bind a new future to every task, chunk by chunk (yielding now and then)."""
        bind = _BIND_FUTURE
        pause = self._gc_held and gc.isenabled()  # these futures get frozen: no scans
        for start in range(0, len(tasks), _CHUNK):
            if pause:
                gc.disable()
            try:
                part = list(starmap(create, repeat((), min(_CHUNK, len(tasks) - start))))
                for task, fut in zip(tasks[start:start + _CHUNK], part, strict=True):
                    bind(task, fut)
            finally:
                if pause:  # freeze them before the collector sees them (no gen-0 scan)
                    gcfreeze.refreeze(self)
                    gc.enable()
            futures += part
            if time.perf_counter() - last_yield > _YIELD_AFTER:
                await asyncio.sleep(0)
                last_yield = time.perf_counter()

    def _mark_submitted(self, tasks: list, routed: list, now: float) -> None:
        """Move the tasks still NEW (not canceled meanwhile) to SUBMITTED, through the life
        cycle of the backend each is routed to."""
        if not tasks:
            return
        first = routed[0]
        if len(tasks) >= bulk.FEW and routed.count(first) == len(routed):  # the usual case
            name = first._name
            for task in tasks:
                task["backend"] = name
            first.move_all(tasks, SUBMITTED, now, notify=False)
            return
        for task, backend in zip(tasks, routed, strict=True):
            if task["state"] == NEW:
                task["backend"] = backend._name
                backend.move(task, SUBMITTED, now, notify=False)

    def _duplicate_uid(self, tasks: list) -> str:
        seen: set[str] = set()
        for t in tasks:
            uid = t["uid"]
            if uid in seen or any(uid in job.uids for job in self._pending) or any(
                    b.is_live(uid) for b in self.backends.values()):
                return uid
            seen.add(uid)
        return "?"

    async def _hand_off(self, tasks: list, routed: list) -> None:
        groups: dict[BaseBackend, list] = {}
        if routed.count(routed[0]) == len(routed):  # one backend, the usual case
            group = [t for t in tasks if t["state"] == SUBMITTED]  # not canceled meanwhile
            if group:
                groups[routed[0]] = group
        else:
            for task, backend in zip(tasks, routed, strict=True):
                if task["state"] != SUBMITTED:
                    continue  # canceled before its backend got it
                group = groups.get(backend)
                if group is None:
                    groups[backend] = [task]
                else:
                    group.append(task)
        for backend, group in groups.items():
            try:
                await backend.submit_tasks(group)
            except Exception as exc:  # the backend refused: fail these tasks, keep the rest
                backend._refuse(group, exc)

    async def _hand_off_all(self, job: _HandOff, now: float) -> None:
        try:
            while job.next < len(job.tasks) and not self._closed:
                await asyncio.sleep(0)
                start, end = job.next, job.next + _HANDOFF_CHUNK
                part, routed = job.tasks[start:end], job.routed[start:end]
                job.next = end
                self._mark_submitted(part, routed, now)
                await self._hand_off(part, routed)
        finally:
            self._pending.remove(job)
            _unclaim(job.claim)

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
            fut = t._future if isinstance(t, BaseTask) else None
            if fut is None:
                raise SessionError(f"task {t.get('uid')} was not submitted; "
                                   "submit it with session.submit_tasks([...]) first")
            if not fut.done():
                futs.append(fut)
        if futs:
            await _wait_all(futs, timeout, len(tasks))
        return tasks

    async def cancel_task(self, task: BaseTask | str) -> bool:
        """Cancel one task (or uid) wherever it runs; True if it will not complete."""
        uid = task if isinstance(task, str) else task["uid"]
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

    # -- services ----------------------------------------------------------------------
    @property
    def services(self) -> Any:
        """The long-running services (``rhapsody_lab.services.ServiceSet``) of this session."""
        if self._services is None:
            from .service_set import ServiceSet
            self._services = ServiceSet()
        return self._services

    async def start_service(self, name: str, command: list[str], **options: Any) -> Any:
        """Start a service (a server process with a readiness check) and wait until ready.

        ``options`` go to ``rhapsody_lab.services.Service``: ``ready_url``, ``endpoint``,
        ``env``, ``log_file``, ``startup_timeout``...; it is stopped by ``close()``.
        """
        self._check_open()
        if not isinstance(name, str) or not name:
            raise SessionError(f"service name must be a non-empty string, got {name!r}")
        if isinstance(command, str) or not command:
            raise SessionError(f"service command must be a non-empty list of strings, got "
                               f"{command!r}; e.g. ['python', '-m', 'http.server', '8000']")
        options.setdefault("log_file", os.path.join(self.work_dir, f"{self.uid}.{name}.log"))
        return await self.services.start(name, command, **options)

    def get_service(self, name: str) -> Any:
        """The service called ``name`` (its ``endpoint``, ``state``, ``tail()``)."""
        return self.services.get(name)

    async def stop_service(self, name: str) -> None:
        """Stop the service called ``name`` (SIGTERM to its process group, then SIGKILL)."""
        await self.services.stop(name)

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
            _unclaim(pending.claim)  # its job may be canceled before it ever ran
        results = await asyncio.gather(*(b.shutdown() for b in self.backends.values()),
                                       return_exceptions=True)
        if self._services is not None:
            results.append(*(await asyncio.gather(self._services.stop_all(),
                                                  return_exceptions=True)))
        while self.events.flush(limit=_FLUSH_LIMIT):
            await asyncio.sleep(0)  # deliver the backlog without blocking the loop
        self.events.close()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    # -- display -----------------------------------------------------------------------
    def __repr__(self) -> str:
        counts = {k: v for k, v in self._stats.counts.items() if v > 0}
        state = "closed" if self._closed else "open"
        return f"<Session {self.uid} {state} backends={list(self.backends)} tasks={counts}>"


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


def _unclaim(claim: _Claim) -> None:
    try:
        _claimed.remove(claim)
    except ValueError:
        pass  # already dropped (a closed session's)


class _Claim:
    """The uids of one ``submit_tasks`` call until its tasks are with their backends."""

    __slots__ = ("owner", "session", "tasks", "uids")

    def __init__(self, session: Session, uids: set[str], tasks: list):
        self.session = session
        self.uids = uids
        self.tasks = tasks
        self.owner: _HandOff | None = None  # the background hand-off, once it takes over


class _HandOff:
    """The part of one big ``submit_tasks`` call not yet handed to its backends."""

    __slots__ = ("claim", "next", "routed", "tasks", "uids")

    def __init__(self, claim: _Claim, tasks: list, routed: list):
        self.claim = claim
        self.uids = claim.uids
        self.tasks = tasks
        self.routed = routed
        self.next = 0
