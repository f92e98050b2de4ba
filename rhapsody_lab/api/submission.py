"""Submission: how ``Session.submit_tasks`` validates, routes and hands tasks over.

``submit_tasks`` validates and routes the whole call first (nothing is submitted if any
task is refused), binds a future to every task, moves them to SUBMITTED through the life
cycle of the backend each is routed to, and hands each backend its tasks: the first
``_FIRST_HANDOFF`` before it returns, the rest in the background, in chunks, so a notebook
stays responsive. Mixed into ``Session`` (which owns the attributes used here).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import operator
import time
from collections.abc import Iterable
from itertools import repeat, starmap
from typing import Any

from . import bulk, claims, dict_tasks, gcfreeze
from .backend import BaseBackend, _kind
from .errors import SessionError, TaskValidationError
from .states import NEW, SUBMITTED
from .task import BaseTask, ComputeTask

__all__ = ["Submission"]

_CHUNK = 2_000  # tasks handed to backends between two yields to the event loop
_HANDOFF_CHUNK = 2_000  # tasks handed to backends per step of the background hand-off
_YIELD_AFTER = 0.005  # seconds of submit work between two yields to the event loop
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


class Submission:
    """``submit_tasks`` and its routing, binding and hand-off (see the module docstring)."""

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

    async def submit_tasks(self, tasks: Iterable[BaseTask | dict]) -> list[asyncio.Future]:
        """Route and queue ``tasks``; return their futures (in order) once accepted.

        Everything is validated first: if any task is refused, none is submitted. The first
        tasks are handed to their backends before this returns, the rest right after, in
        chunks, while the caller goes on (a task is SUBMITTED until its backend has it).
        A plain dict is a task description (``api.dict_tasks``), kept up to date in place.
        """
        self._check_open()
        if tasks.__class__ is not list:
            if isinstance(tasks, BaseTask) or not isinstance(tasks, Iterable):
                raise SessionError("submit_tasks expects a list of tasks; write "
                                   "submit_tasks([task])")
            tasks = list(tasks)
        if not tasks:
            return []
        adopted = None  # RHAPSODY's plain dict tasks (found in a pass at C speed):
        if dict in map(type, tasks):
            tasks, adopted = dict_tasks.adopt(tasks)
        loop = asyncio.get_running_loop()
        self.events.bind(loop)
        if len(tasks) >= _GC_FREEZE_MIN:
            self._hold_gc()
        self._submitting += 1
        try:
            futures = await self._submit(tasks, loop)
            return dict_tasks.relay(loop, adopted, futures, self._dict_tasks) if adopted \
                else futures
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
        for backend in (b for b in used if not b.is_running):
            await backend.initialize()
            yielded = True
        for task, backend in to_check:  # a running backend knows its resources
            backend.check_task(task)
        claim = self._claim(tasks, uids, used, yielded)
        if self._task_index is not None:  # uid -> task for the telemetry (telemetry_hooks)
            self._task_index.update(zip(map(_UID, tasks), tasks, strict=True))
        try:
            futures = await self._bind_and_hand_off(tasks, routed, claim, loop, last_yield)
        finally:
            if claim.owner is None:  # no background hand-off took it over
                claims.unclaim(claim)
        if self._task_index is not None:
            # RHAPSODY's telemetry sees TaskSubmitted as submit_tasks returns, not at the
            # stream's next tick (one coalesced flush per call)
            self.events.flush_soon()
        return futures

    def _claim(self, tasks: list, uids: set[str], used: set[BaseBackend], yielded: bool
               ) -> claims.Claim:
        """Refuse a task already submitted or a uid in use, else claim the uids: check and
        claim in one step (no await), so two concurrent submits never both pass."""
        clash = claims.clashes(self, uids, tasks)
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
        claim = claims.Claim(self, uids, tasks)
        claims.claimed.append(claim)
        return claim

    async def _bind_and_hand_off(self, tasks: list, routed: list, claim: claims.Claim,
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
            pending = claim.owner = claims.HandOff(claim, tasks[first:], routed[first:])
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

    async def _hand_off_all(self, job: claims.HandOff, now: float) -> None:
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
            claims.unclaim(job.claim)
