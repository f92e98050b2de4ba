"""Dask chunks: the fast path for many small function tasks (``DaskExecutionBackend``).

Dask costs ~2 ms of client and scheduler CPU per task, so a null function through one Dask
task each runs at Dask's pace at best. Here function tasks submitted together that share
a function and Dask options go as *chunks*: one Dask task runs ``k`` of ours in a row
(``_run_chunk``, key ``<function-name>-<token>-<n>``, so Dask's dashboard shows them in the
function's TaskGroup). ``k`` follows the function's measured duration so a chunk holds
about ``CHUNK_SECONDS`` of work; tasks of ``CHUNK_SECONDS`` or more go one per Dask task
(the unchunked path). Measured with ``bench/bench_dask.py --before`` on the shared 2-core
machine (load 5-24; raw Dask ran 60-300 null tasks/s there), rhapsody_lab / raw
``client.map`` on one LocalCluster of 2 worker processes: null functions N=2,000
0.70-0.80x unchunked -> 22-31x chunked (two full runs, medians of 3 reps), N=10,000
~1.0x -> 67-74x (three runs); 100 ms tasks (200 on 4 workers) 1.00x (median of four
runs: 0.85-1.03x, the unchunked path 0.83-1.02x in the same runs: a probe, then one
Dask task each).

How ``k`` is found (``ChunkFeeder``, on the submitter thread): a function never measured
keeps up to ``2 x slots`` tasks alone in flight as a probe and holds the rest back; each
result measures its time per task (the collector calls ``measure``). The held tasks then
go in chunks of at most ``RAMP`` times the largest size measured so far (a function that
was tiny on its first calls cannot hold a worker for long), with at most ``2 x slots``
chunks in flight, until the size wanted is reached: then everything held goes at once,
in chunks no larger than a fair share per slot. A probe with no result within
``PROBE_WAIT`` means long tasks: they go unchunked. Later submits of a measured function
go at once.

Each task keeps its own life: the runner passes the cancel gate per task (a task canceled
before its turn is skipped, CANCELED), catches each task's exception (a failing task
fails alone) and does each task's ``retries``; the result carries each task's start and
end, so RUNNING, DONE and FAILED keep their own times. The look at what workers hold
(``_poll_running``) shows a running chunk's tasks as RUNNING.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from ..api.backend import DONE_RUN, result_text
from ..api.errors import BackendError
from ..api.states import CANCELED, DONE, FAILED, RUNNING
from ._dask_gate import enter, leave
from ._dask_tasks import _attempt, _map_options, _retries, _slot

__all__ = ["CHUNK_SECONDS", "ChunkFeeder", "collect_chunk"]

CHUNK_SECONDS = 0.005   # work one chunk aims at (s)
K_MAX = 1024            # tasks in one chunk at most
RAMP = 16               # a chunk is at most this many times the largest size measured
PROBE_WAIT = 1.0        # s without any probe result: the tasks are long, go unchunked
_ALPHA = 0.3            # weight of a new measurement in a function's time per task
_POLL = 0.05            # s between two looks at the held tasks while some are held


class _Plan:
    """What is known of one function: time per task, largest chunk measured, probe start."""

    __slots__ = ("est", "fn", "kseen", "probe_at")

    def __init__(self, fn: Any) -> None:
        self.fn = fn            # held: keeps id(fn) from being reused while planned
        self.est: float | None = None
        self.kseen = 0
        self.probe_at: float | None = None


class _Group:
    """Tasks of one function and one set of Dask options held back by the feeder."""

    __slots__ = ("backlog", "fn", "futs", "opts")

    def __init__(self, fn: Any, opts: tuple) -> None:
        self.fn = fn
        self.opts = opts
        self.backlog: deque = deque()
        self.futs: list = []    # Dask futures released while the size ramps up

    def inflight(self) -> int:
        self.futs = [f for f in self.futs if f.status == "pending"]
        return len(self.futs)


class ChunkFeeder:
    """Holds function tasks and releases them to Dask alone or in chunks (docstring above).

    ``add`` and ``release`` run on the backend's submitter thread, ``measure`` on its
    collector thread (plain attribute writes: the GIL keeps each one whole).
    """

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._plans: dict[int, _Plan] = {}
        self._groups: dict[tuple, _Group] = {}
        self.chunks_sent = 0    # Dask tasks that carried a chunk (tests, benches)
        self.tasks_chunked = 0  # tasks that went in them

    # -- collector thread ------------------------------------------------------------
    def measure(self, fn: Any, seconds: float, k: int) -> bool:
        """Record that tasks of ``fn`` took ``seconds`` each (the median of a chunk of
        ``k``: a load that preempts the worker now and then does not shrink chunks); True
        if some tasks wait for it (the caller then wakes the submitter)."""
        plan = self._plans.get(id(fn))
        if plan is None or plan.fn is not fn:
            return False
        per = max(seconds, 0.0)
        plan.est = per if plan.est is None else (1 - _ALPHA) * plan.est + _ALPHA * per
        if k > plan.kseen:
            plan.kseen = k
        return bool(self._groups)

    # -- submitter thread ------------------------------------------------------------
    def add(self, tasks: list, opts: tuple) -> None:
        """Hold ``tasks`` (function tasks sharing Dask options) until ``release``."""
        groups = self._groups
        for task in tasks:
            fn = task["function"]
            key = (id(fn), opts)
            g = groups.get(key)
            if g is None or g.fn is not fn:
                g = groups[key] = _Group(fn, opts)
            g.backlog.append(task)
            if id(fn) not in self._plans or self._plans[id(fn)].fn is not fn:
                if len(self._plans) > 4096:
                    self._plans = {k: p for k, p in self._plans.items()
                                   if any(g.fn is p.fn for g in groups.values())}
                self._plans[id(fn)] = _Plan(fn)

    def wait_time(self) -> float | None:
        """How long the submitter may sleep before ``release`` has work (None: forever)."""
        if not self._groups:
            return None
        now = time.monotonic()
        wait = _POLL
        for g in self._groups.values():
            plan = self._plans[id(g.fn)]
            if plan.est is None and plan.probe_at is not None:
                wait = min(wait, max(0.001, plan.probe_at + PROBE_WAIT - now))
        return wait

    def release(self) -> None:
        """Send to Dask what the plans allow now; keep the rest held."""
        slots = max(1, self._backend._nthreads)
        now = time.monotonic()
        for key, g in list(self._groups.items()):
            self._release_group(g, self._plans[id(g.fn)], slots, now)
            if not g.backlog:
                del self._groups[key]

    def _release_group(self, g: _Group, plan: _Plan, slots: int, now: float) -> None:
        q = g.backlog
        if plan.est is None:  # probing: up to 2 x slots tasks alone in flight
            if plan.probe_at is None:
                plan.probe_at = now
            elif now - plan.probe_at > PROBE_WAIT:
                self._send(g, self._take(q, len(q)), 1)  # no result yet: long tasks
                return
            free = 2 * slots - g.inflight()
            if free > 0:
                g.futs.extend(self._send(g, self._take(q, free), 1))
            return
        want = min(K_MAX, max(1, int(CHUNK_SECONDS / max(plan.est, 1e-9))))
        if want <= 1:
            self._send(g, self._take(q, len(q)), 1)
            return
        k = min(want, RAMP * max(1, plan.kseen))
        if k < want:  # still ramping: a few chunks in flight at a time
            free = 2 * slots - g.inflight()
            if free > 0:
                g.futs.extend(self._send(g, self._take(q, free * k), k))
            return
        fair = math.ceil(len(q) / (2 * slots))
        self._send(g, self._take(q, len(q)), max(1, min(k, fair)))

    def _take(self, q: deque, n: int) -> list:
        live = self._backend._live
        out: list = []
        while q and len(out) < n:
            task = q.popleft()
            if task["uid"] in live:  # a task canceled while held is dropped here
                out.append(task)
        return out

    def _send(self, g: _Group, tasks: list, k: int) -> list:
        """Hand ``tasks`` to Dask, alone (``k == 1``) or in chunks of ``k``; the futures."""
        if not tasks:
            return []
        backend = self._backend
        try:
            if k == 1:
                return backend._map_tasks("f", g.opts, tasks)
            chunks = [tasks[i:i + k] for i in range(0, len(tasks), k)]
            name = getattr(g.fn, "__name__", None) or "rhapsody"
            keys = [backend._next_key(name) for _ in chunks]
            futs = backend.client.map(_run_chunk, [chunk_payload(g.fn, c) for c in chunks],
                                      key=keys, pure=False, **_map_options(g.opts))
            backend._track(chunks, futs, chunks=True)
            self.chunks_sent += len(chunks)
            self.tasks_chunked += len(tasks)
            return futs
        except Exception as exc:  # the scheduler went away mid-submit
            reason = BackendError(backend.name, f"could not submit to Dask: {exc}")
            for task in tasks:
                if task["uid"] in backend._live and task["uid"] not in backend._futs:
                    backend._report_failure(task, reason, str(reason))
            return []


def chunk_payload(fn: Any, tasks: list) -> tuple:
    """What one Dask task of a chunk carries: the function once, then each task's call."""
    return (fn, [(t["uid"], t["args"] or (), t["kwargs"] or {}, _retries(t)) for t in tasks])


# -- on the worker ---------------------------------------------------------------------
def _run_chunk(payload: tuple) -> tuple:
    """Run a chunk's tasks in turn: ``(slot, typical, seconds, starts, ends, values,
    errors)``: ``typical`` is the median time of a task, ``seconds`` the chunk's.

    ``errors`` maps a task's index to ``(exception, traceback)``, or to None when a cancel
    got to the gate first (that task never ran); it is None when there are none.
    """
    fn, items = payload
    slot = _slot()
    begin = time.time()
    starts: list = []
    ends: list = []
    values: list = []
    errors: dict[int, Any] | None = None
    for i, (uid, args, kwargs, retries) in enumerate(items):
        t0 = enter(uid)
        if t0 is None:
            if errors is None:
                errors = {}
            errors[i] = None
            starts.append(None)
            ends.append(time.time())
            values.append(None)
            continue
        try:
            ok, value, tb = _attempt(fn, args, kwargs, retries)
        finally:
            leave(uid)
        starts.append(t0)
        ends.append(time.time())
        if ok:
            values.append(value)
        else:
            if errors is None:
                errors = {}
            errors[i] = (value, tb)
            values.append(None)
    ran = sorted(e - s for s, e in zip(starts, ends, strict=True) if s is not None)
    typical = ran[len(ran) // 2] if ran else 0.0  # median: a preempted task counts once
    return (slot, typical, time.time() - begin, starts, ends, values, errors)


# -- in the collector ------------------------------------------------------------------
def collect_chunk(live: dict, tasks: list, res: tuple, out: Any) -> float:
    """Fill in the tasks of a finished chunk and queue their outcome records with ``out``;
    returns the median time of its tasks. All DONE: one ``DONE_RUN`` record for it."""
    slot, typical, _seconds, starts, ends, values, errors = res
    if errors is None and all(t["uid"] in live for t in tasks):
        none_text = "None"
        for task, value in zip(tasks, values, strict=True):
            task["return_value"] = value
            task["stdout"] = none_text if value is None else result_text(value)
            task["exit_code"] = 0
        out((tasks, DONE_RUN, (starts, ends), slot))
        return typical
    errors = errors or {}
    for i, task in enumerate(tasks):
        if task["uid"] not in live:
            continue
        if i in errors and errors[i] is None:  # refused at the gate: a cancel came first
            out((task, CANCELED, ends[i], slot))
            continue
        if i in errors:
            exc, tb = errors[i]
            task["exception"] = exc
            task["stderr"] = tb
            task["exit_code"] = 1
            state = FAILED
        else:
            value = values[i]
            task["return_value"] = value
            task["stdout"] = result_text(value)
            task["exit_code"] = 0
            state = DONE
        out((task, RUNNING, starts[i], slot))
        out((task, state, ends[i], slot))
    return typical
