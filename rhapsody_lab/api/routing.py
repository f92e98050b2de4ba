"""Policy routing: where a task goes when a ``Session`` was built from a policy.

A task that names a backend (``task.backend``) goes there. Otherwise the rules whose
criteria all hold (task kind, any of ``task.tags``, requested cores/GPUs/ranks) give
candidate backends, tried by backend ``priority`` (higher first), then rule order, then
order within the rule; the first whose share can hold the request wins. Then the policy's
``default``, then any backend (by priority) that runs the kind and fits. A request no share
can hold raises ``ResourceError`` at submit. Decisions are cached per task signature, so
routing 100,000 alike tasks costs one dict look-up each.

A task's request: ``cores``, ``gpus``, ``ranks`` fields (``ComputeTask(..., cores=2)``),
or in ``task_backend_specific_kwargs`` ``ranks`` / ``process_templates`` (Dragon) and
``resources={"GPU": n}`` (Dask). One core per rank at least; default 1 core, 0 GPUs.

``limit`` (max tasks in flight on a backend) is enforced by a ``LimitedBackend`` that
wraps that backend (``PolicyRouter.wrap``, before the session sees it): tasks beyond it
stay SUBMITTED in a FIFO and are handed over as earlier ones end; nothing blocks the event
loop and nothing is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from .backend import BaseBackend, _kind
from .errors import ResourceError, SessionError, TaskValidationError
from .states import CANCELED, NEW, SUBMITTED, TERMINAL_STATES
from .task import BaseTask

__all__ = ["LimitedBackend", "PolicyRouter", "task_request"]

_EMPTY: frozenset[str] = frozenset()


def _count(task: dict, name: str, value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TaskValidationError(task["uid"], f"{name} must be an integer >= 0, got "
                                  f"{value!r}", field=field)
    return value


def task_request(task: dict) -> tuple[int, int, int]:
    """``(cores, gpus, ranks)`` that ``task`` asks for (see the module docstring)."""
    kw = task.get("task_backend_specific_kwargs") or {}
    ranks = task.get("ranks")
    if ranks is not None:
        ranks = _count(task, "ranks", ranks, "ranks")
    elif kw.get("ranks") is not None:
        ranks = _count(task, "ranks", kw["ranks"], "task_backend_specific_kwargs.ranks")
    elif isinstance(kw.get("process_templates"), list | tuple):
        ranks = sum(t[0] for t in kw["process_templates"] if isinstance(t, list | tuple)
                    and t and isinstance(t[0], int))
    cores = task.get("cores")
    cores = 0 if _kind(task) == "ai" and cores is None else (
        1 if cores is None else _count(task, "cores", cores, "cores"))
    gpus = task.get("gpus")
    if gpus is None:
        res = kw.get("resources")
        gpus = res.get("GPU", 0) if isinstance(res, dict) else 0
        gpus = gpus if isinstance(gpus, int) and not isinstance(gpus, bool) else 0
    else:
        gpus = _count(task, "gpus", gpus, "gpus")
    ranks = 1 if ranks is None else ranks
    return max(cores, ranks), gpus, ranks


def _tags(task: dict) -> frozenset[str]:
    tags = task.get("tags")
    if tags is None:
        return _EMPTY
    if isinstance(tags, str):
        return frozenset((tags,))
    if isinstance(tags, list | tuple | set | frozenset) and all(
            isinstance(t, str) for t in tags):
        return frozenset(tags)
    raise TaskValidationError(task["uid"], f"tags must be a string or a list of strings, "
                              f"got {tags!r}", field="tags")


class PolicyRouter:
    """Routes a session's tasks by a policy and enforces its per-backend limits.

    ``policy`` is a ``rhapsody_lab.policy.Policy`` (its ``backends`` shares, ``rules`` and
    ``default``); the engine only reads it.
    """

    def __init__(self, policy: Any):
        self.policy = policy
        self.shares = policy.backends
        self._order = sorted(self.shares, key=lambda n: -self.shares[n].priority)
        self._rank = {n: i for i, n in enumerate(self._order)}
        self._cache: dict[Any, str | tuple[str, str]] = {}
        self.gates: dict[str, LimitedBackend] = {}
        self.routed: dict[str, int] = dict.fromkeys(self.shares, 0)

    def wrap(self, backends: Sequence[BaseBackend]) -> list[BaseBackend]:
        """The backends to give the session: each whose share has a ``limit`` behind a
        ``LimitedBackend`` (also kept in ``gates``), the others as they are."""
        out: list[BaseBackend] = []
        for backend in backends:
            share = self.shares.get(backend.name)
            if share is not None and share.limit:
                gate = self.gates.get(backend.name)
                if gate is None or gate.backend is not backend:
                    gate = self.gates[backend.name] = LimitedBackend(backend, share.limit)
                backend = gate  # type: ignore[assignment]
            out.append(backend)
        return out

    # -- decisions -----------------------------------------------------------------------
    def _decide(self, kind: str, tags: frozenset[str], cores: int, gpus: int,
                ranks: int) -> str | tuple[str, str]:
        """A backend name, or ``(resource_type, message)`` when no share can hold it."""
        shares = self.shares

        def fits(name: str) -> bool:
            s = shares[name]
            return kind in s.kinds and (kind == "ai" or cores <= s.cores) and gpus <= s.gpus

        candidates: list[tuple[int, int, int, str]] = []
        for rule in self.policy.rules:
            if rule.matches(kind, tags, cores, gpus, ranks):
                for j, name in enumerate(rule.backends):
                    candidates.append((-shares[name].priority, rule.index, j, name))
        for *_, name in sorted(candidates):
            if fits(name):
                return name
        default = self.policy.default
        if default is not None and fits(default):
            return default
        for name in self._order:
            if fits(name):
                return name
        runs = [n for n in self._order if kind in shares[n].kinds]
        if not runs:
            return ("kind", f"no backend of the policy runs {kind} "
                                 f"tasks (backends: {', '.join(shares)})")
        if gpus > max(shares[n].gpus for n in runs):
            best = max(runs, key=lambda n: shares[n].gpus)
            return ("gpus", f"needs {gpus} GPUs, more than any share "
                                 f"that runs {kind} tasks (largest: backend '{best}' with "
                                 f"{shares[best].gpus}); ask for fewer or give a backend "
                                 "more GPUs in the policy")
        best = max(runs, key=lambda n: shares[n].cores)
        what = f"{ranks} ranks ({cores} cores)" if ranks > 1 else f"{cores} cores"
        return ("cores", f"needs {what}, more than any share that runs "
                             f"{kind} tasks (largest: backend '{best}' with "
                             f"{shares[best].cores} cores); ask for fewer or give a "
                             "backend more cores in the policy")

    def route(self, session: Any, task: Any, default: dict) -> BaseBackend:
        """The backend for ``task``; raises like ``Session._route`` or ``ResourceError``."""
        if not isinstance(task, BaseTask) or task["backend"] is not None:
            backend = session._route(task, default)  # named: validated by the session
            share = self.shares.get(backend.name)
            if share is not None:
                kind = _kind(task)
                cores, gpus, ranks = task_request(task)
                if (kind != "ai" and cores > share.cores) or gpus > share.gpus:
                    what, need, have = ("gpus", f"{gpus} GPUs", share.gpus) \
                        if gpus > share.gpus else ("cores", f"{ranks} ranks ({cores} cores)"
                                                   if ranks > 1 else f"{cores} cores",
                                                   share.cores)
                    raise ResourceError(task["uid"], what, f"needs {need} but "
                                        f"backend '{backend.name}' (named by the task) has "
                                        f"a share of {have}; ask for fewer or route it to "
                                        "another backend")
            return backend
        kind = _kind(task)
        if task.get("tags") is None and task.get("cores") is None and task.get(
                "gpus") is None and task.get("ranks") is None and not task.get(
                "task_backend_specific_kwargs"):
            key: Any = kind
        else:
            tags = _tags(task)
            cores, gpus, ranks = task_request(task)
            key = (kind, tags, cores, gpus, ranks)
        name = self._cache.get(key)
        if name is None:
            if key is kind:
                cores, gpus, ranks = task_request(task)
                name = self._decide(kind, _EMPTY, cores, gpus, ranks)
            else:
                name = self._decide(*key)
            self._cache[key] = name
        if name.__class__ is tuple:
            if name[0] == "kind":
                raise TaskValidationError(task["uid"], name[1], field="backend")
            raise ResourceError(task["uid"], *name)
        backend = session.backends.get(name)
        if backend is None:
            raise SessionError(f"backend '{name}' of the policy is not in session "
                               f"{session.uid}")
        return backend

    def route_all(self, session: Any, tasks: list, to_check: list) -> list[BaseBackend]:
        """``Session._route_all`` under a policy: route every task or raise (nothing sent)."""
        default: dict = {}
        routed: list[BaseBackend] = []
        append = routed.append
        route = self.route
        counts: dict[str, int] = {}
        for task in tasks:
            backend = route(session, task, default)
            if task["state"] != NEW or task._future is not None:
                raise SessionError(
                    f"task {task['uid']} was already submitted (state {task['state']}); "
                    "create a new task to run the same work again")
            if task.get("prompt") is not None or task.get("task_backend_specific_kwargs"):
                to_check.append((task, backend))
            append(backend)
            name = backend._name
            counts[name] = counts.get(name, 0) + 1
        for name, n in counts.items():  # only once the whole call is accepted
            self.routed[name] = self.routed.get(name, 0) + n
        return routed

    def describe(self) -> str:
        gates = {n: f"{len(g.inflight)}/{g.limit} in flight, {len(g.held)} held"
                 for n, g in self.gates.items()}
        return "\n".join([self.policy.summary(), f"  routed: {self.routed}",
                          *(f"  gate {n}: {v}" for n, v in gates.items())])


class LimitedBackend:
    """``backend`` with at most ``limit`` tasks in flight; the rest wait here, in order.

    A session holds this wrapper in place of the backend (``.backend`` is the wrapped one).
    It defines what the limit changes, ``submit_tasks``, ``is_live``, ``cancel_task``,
    ``cancel_all_tasks`` and ``shutdown`` (plus starting, so that ``await`` and ``async
    with`` give the wrapper); every other attribute is the backend's, so the name, events,
    futures and capacity are the backend's own. Held tasks stay SUBMITTED and are handed
    over as earlier ones end (a state callback on the backend). A registered virtual
    subclass of ``BaseBackend``.
    """

    def __init__(self, backend: BaseBackend, limit: int):
        self.backend = backend
        self.limit = limit
        self._name = self.name = backend.name  # read per task by the session: no lookup
        self.inflight: set[str] = set()
        self.held: deque = deque()
        self.held_uids: dict[str, BaseTask] = {}
        self._scheduled = False
        self._sends: set[asyncio.Task] = set()
        backend.register_callback(self._on_state)

    def __getattr__(self, name: str) -> Any:  # only for what this class does not define
        try:
            backend = self.__dict__["backend"]
        except KeyError:  # not initialised (a copy being made): no recursion
            raise AttributeError(name) from None
        return getattr(backend, name)

    def __repr__(self) -> str:
        return f"<LimitedBackend limit={self.limit} of {self.backend!r}>"

    async def initialize(self) -> LimitedBackend:
        await self.backend.initialize()
        return self

    def __await__(self):
        return self.initialize().__await__()

    async def __aenter__(self) -> LimitedBackend:
        return await self.initialize()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def _take(self) -> list:
        room = self.limit - len(self.inflight)
        batch = []
        held, held_uids, inflight = self.held, self.held_uids, self.inflight
        while room > 0 and held:
            task = held.popleft()
            uid = task["uid"]
            if held_uids.pop(uid, None) is None or task["state"] != SUBMITTED:
                continue  # canceled while held
            inflight.add(uid)
            batch.append(task)
            room -= 1
        return batch

    async def submit_tasks(self, tasks: Sequence[dict]) -> None:
        for task in tasks:
            self.held.append(task)
            self.held_uids[task["uid"]] = task
        batch = self._take()
        if batch:
            await self._send(batch)

    async def _send(self, batch: list) -> None:
        try:
            await self.backend.submit_tasks(batch)
        except Exception as exc:  # the backend refused: fail these tasks, keep the rest
            self.backend._refuse(batch, exc)

    def _on_state(self, task: dict, state: str) -> None:
        if state in TERMINAL_STATES:
            self.inflight.discard(task["uid"])
            if self.held and not self._scheduled and len(self.inflight) < self.limit:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        self._scheduled = False
        if not self.backend.is_running:
            return
        batch = self._take()
        if batch:
            job = asyncio.get_running_loop().create_task(self._send(batch))
            self._sends.add(job)
            job.add_done_callback(self._sends.discard)

    def is_live(self, uid: str) -> bool:
        return uid in self.held_uids or self.backend.is_live(uid)

    def _drop_held(self, uid: str, reason: str) -> bool:
        task = self.held_uids.pop(uid, None)
        if task is None:
            return False
        self.backend._finish(task, CANCELED, time.time(), reason=reason)
        return True

    async def cancel_task(self, uid: str) -> bool:
        if self._drop_held(uid, "canceled while waiting for the backend's limit"):
            return True
        return await self.backend.cancel_task(uid)

    async def cancel_all_tasks(self) -> int:
        n = 0
        for uid in list(self.held_uids):
            n += self._drop_held(uid, "canceled while waiting for the backend's limit")
        self.held.clear()
        return n + await self.backend.cancel_all_tasks()

    async def shutdown(self) -> None:
        for uid in list(self.held_uids):
            self._drop_held(uid, "backend shut down before the task left the limit queue")
        self.held.clear()
        await self.backend.shutdown()


BaseBackend.register(LimitedBackend)  # what a session accepts: it wraps one
