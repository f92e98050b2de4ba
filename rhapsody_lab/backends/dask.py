"""DaskExecutionBackend: tasks on any Dask cluster (LocalCluster by default).

Where time goes (ANCHORS.md): the Dask client and scheduler cost ~2 ms of CPU per task, so
this backend adds as little as it can around them and never on the event loop:

- ``submit_tasks`` only records the tasks and queues them for a *submitter* thread, which
  hands everything queued so far to Dask in bulk (one ``client.map`` per group of tasks
  sharing Dask options). Keys are ``<function-name>-<backend token>-<n>``: a common prefix
  and ``-`` separators keep Dask's TaskGroups few (a dotted uid makes each task its own
  group and the scheduler slows down with their number).
- Each Dask future reports completion into a deque; a *collector* thread gathers results
  of whatever finished in one ``client.gather`` per batch, fills the task dicts and wakes
  the event loop once per batch (``BaseBackend.report``); the one drain moves each task to
  RUNNING (with the worker's start time and address) and its terminal state.
- The client is synchronous (its own I/O thread); every blocking Dask call runs on these
  threads or ``asyncio.to_thread``, never on the session's loop.

Faults: a worker killed mid-task makes Dask *rerun* the tasks it held (running, or queued
on that worker) elsewhere; a task whose workers die more than
``distributed.scheduler.allowed-failures`` times (default 3) fails with ``KilledWorker``;
other tasks are untouched. A scheduler that goes away fails the live
tasks with ``BackendError`` and the next call raises ``BackendError``. Workers must be
able to import ``rhapsody_lab`` (the task wrappers live here).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import queue
import re
import secrets
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..api.backend import BaseBackend, result_text
from ..api.errors import BackendError, ResourceError, SessionError, TaskValidationError
from ..api.states import CANCELED, DONE, FAILED, RUNNING
from ._dask_gate import claim, enter, leave
from ._subprocess import ProcessTable, exec_options, run_executable

__all__ = ["DaskExecutionBackend"]

_TICK = 0.5             # collector watchdog period (s): scheduler loss, capacity refresh
_GATHER_MAX = 2_000     # futures gathered in one call
# The collector polls the status of pending Dask futures (a plain attribute read) rather
# than taking one done-callback each: those cost a coroutine plus a thread-pool submit per
# task on the client's I/O thread, ~20% of the driver's CPU at full speed. The poll period
# grows with the number pending (each scan stays a few % of the time) and backs off while
# nothing finishes (long tasks); every scan that finds results makes one gather.
_POLL_MIN = 0.002
_POLL_PER_PENDING = 4e-6
_POLL_MAX = 0.05
# Gathered futures are held, then dropped in bulk (which makes Dask forget their keys and
# free the workers' copies) once nothing is pending, or past these bounds: forgetting a
# key costs the scheduler about as much as running a null task, so a burst is not slowed
# by the clean-up of its own first results.
_HOLD_KEYS = 20_000
_HOLD_BYTES = 256 * 2**20
_LOST = "scheduler-lost"
_RUNNING_POLL = 1.0       # seconds between two looks at what the workers hold

# resources= keys accepted for the default LocalCluster: name -> (types, description)
_CLUSTER_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "n_workers": ((int,), "an integer >= 1, e.g. 4"),
    "threads_per_worker": ((int,), "an integer >= 1, e.g. 1"),
    "processes": ((bool,), "True (worker processes) or False (threads in this process)"),
    "memory_limit": ((str, int, float, type(None)), "e.g. '2GiB', 0 or None"),
    "resources": ((dict,), "a dict of worker resources, e.g. {'GPU': 1}"),
    "host": ((str,), "an interface address, e.g. '127.0.0.1'"),
    "scheduler_port": ((int,), "a port number, 0 for any"),
    "dashboard_address": ((str, type(None)), "e.g. ':0' or ':8787', None to disable"),
    "local_directory": ((str,), "a writable directory path"),
    "silence_logs": ((int, bool), "a logging level, e.g. 30"),
}
# task_backend_specific_kwargs keys passed on to Dask
_TASK_KEYS = ("resources", "retries", "priority", "workers")
_SAFE = re.compile(r"[^A-Za-z0-9_]+")


def _validate_cluster_resources(resources: Any) -> dict[str, Any]:
    if resources is None:
        return {}
    if not isinstance(resources, dict):
        raise SessionError(f"resources must be a dict of LocalCluster options, got "
                           f"{type(resources).__name__}; e.g. resources={{'n_workers': 4}}")
    for key, value in resources.items():
        if key not in _CLUSTER_KEYS:
            raise SessionError(
                f"resources[{key!r}] is not a LocalCluster option this backend accepts; "
                f"use one of {sorted(_CLUSTER_KEYS)}, or build the cluster yourself and "
                f"pass cluster=")
        types, what = _CLUSTER_KEYS[key]
        bad = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if not bad and key in ("n_workers", "threads_per_worker") and value < 1:
            bad = True
        if not bad and key == "resources":
            bad = not all(isinstance(k, str) and isinstance(v, int | float)
                          and not isinstance(v, bool) and v >= 0 for k, v in value.items())
        if bad:
            raise SessionError(f"resources[{key!r}] must be {what}, got {value!r}")
    return dict(resources)


def _validate_task_kwargs(task: dict) -> None:
    kw = task.get("task_backend_specific_kwargs") or {}
    if not isinstance(kw, dict):
        raise TaskValidationError(task["uid"], "task_backend_specific_kwargs must be a dict",
                                  field="task_backend_specific_kwargs")
    res = kw.get("resources")
    if res is not None and not (isinstance(res, dict) and all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            and v > 0 for k, v in res.items())):
        raise TaskValidationError(
            task["uid"], f"resources must be a dict of resource name to amount > 0, e.g. "
            f"{{'GPU': 1}}, got {res!r}", field="task_backend_specific_kwargs.resources")
    retries = kw.get("retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)
                                or retries < 0):
        raise TaskValidationError(task["uid"], f"retries must be an integer >= 0, got "
                                  f"{retries!r}", field="task_backend_specific_kwargs.retries")
    prio = kw.get("priority")
    if prio is not None and (isinstance(prio, bool) or not isinstance(prio, int)):
        raise TaskValidationError(task["uid"], f"priority must be an integer, got {prio!r}",
                                  field="task_backend_specific_kwargs.priority")
    workers = kw.get("workers")
    if workers is not None and not (isinstance(workers, str) or (
            isinstance(workers, list | tuple) and all(isinstance(w, str) for w in workers))):
        raise TaskValidationError(task["uid"], f"workers must be an address or a list of "
                                  f"addresses, got {workers!r}",
                                  field="task_backend_specific_kwargs.workers")


def _dask_options(task: dict) -> tuple:
    """Hashable Dask submit options of ``task`` (tasks sharing them go in one map call)."""
    kw = task.get("task_backend_specific_kwargs")
    if not kw:
        return ()
    out = []
    for k in _TASK_KEYS:
        v = kw.get(k)
        if v is None:
            continue
        if isinstance(v, dict):
            v = tuple(sorted(v.items()))
        elif isinstance(v, list):
            v = tuple(v)
        out.append((k, v))
    return tuple(out)


_PLAIN = (int, float, str, bytes, bool, type(None))


def _plain(args: Any, kwargs: Any) -> bool:
    """Whether the arguments are only simple values (certain to pickle)."""
    return all(type(a) in _PLAIN for a in args or ()) and all(
        type(v) in _PLAIN for v in (kwargs or {}).values())


def _pickle_error(obj: Any) -> str | None:
    import cloudpickle
    try:
        cloudpickle.dumps(obj)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# -- what runs on the workers ----------------------------------------------------------
_worker_procs = ProcessTable()


def _slot() -> str | None:
    try:
        from distributed import get_worker
        return get_worker().address
    except Exception:
        return None


def _call(payload: tuple) -> tuple:
    """Run one function task on a worker: ``(ok, value|exc, traceback, t0, t1, slot)``;
    ``ok`` is None (and the function never ran) when a cancel got to the gate first."""
    uid, fn, args, kwargs = payload
    t0 = enter(uid)
    if t0 is None:
        return (None, None, None, None, time.time(), _slot())
    try:
        value = fn(*args, **kwargs)
        if inspect.iscoroutine(value):
            value = asyncio.run(value)
    except BaseException as exc:
        tb = "".join(traceback.format_exception(exc))
        return (False, _portable(exc), tb, t0, time.time(), _slot())
    finally:
        leave(uid)
    return (True, value, None, t0, time.time(), _slot())


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError carrying its repr."""
    try:
        import cloudpickle
        cloudpickle.loads(cloudpickle.dumps(exc))
        if not isinstance(exc, Exception):
            raise TypeError("not an Exception")
        return exc
    except Exception:
        return RuntimeError(repr(exc))


def _run_exec(payload: tuple) -> tuple:
    """Run one executable task on a worker: ``(state, stdout, stderr, exit_code, t0, t1, slot)``."""
    uid, exe, arguments, opts = payload
    t0 = enter(uid)
    if t0 is None:  # canceled before it started: never start it
        return (CANCELED, "", "", None, None, time.time(), _slot())
    rec: dict[str, Any] = {"uid": uid, "executable": exe, "arguments": arguments}
    try:
        state = run_executable(rec, opts, _worker_procs.register_for(uid))
    except Exception as exc:  # never lose a task to an unexpected error
        rec.update(stdout="", stderr="".join(traceback.format_exception(exc)), exit_code=1)
        state = FAILED
    finally:
        leave(uid)
    if _worker_procs.was_killed(uid):
        state = CANCELED
        _worker_procs.forget(uid)
    return (state, rec.get("stdout"), rec.get("stderr"), rec.get("exit_code"), t0,
            time.time(), _slot())


def _kill_on_worker(uids: list[str]) -> int:
    return sum(bool(_worker_procs.kill(uid)) for uid in uids)


# -- the backend -----------------------------------------------------------------------
class DaskExecutionBackend(BaseBackend):
    """Runs function and executable tasks on a Dask cluster.

    ``resources`` configures the default ``LocalCluster`` (e.g. ``{"n_workers": 4}``);
    ``cluster=`` (any Dask cluster object, or a scheduler address) or ``client=`` (a
    ``distributed.Client`` or an address) use an existing one, which is left running at
    shutdown. Per task, ``task_backend_specific_kwargs`` may carry Dask ``resources``
    (e.g. ``{"GPU": 1}``), ``retries``, ``priority``, ``workers``, and for executables
    ``cwd``, ``env``, ``shell``, ``timeout``.
    """

    #: A task's start is seen twice: by the look at what workers hold, then with its result
    starts_may_repeat = True

    def __init__(self, resources: dict | None = None, cluster: Any = None, client: Any = None,
                 name: str = "dask"):
        super().__init__(name)
        self._cluster_kwargs = _validate_cluster_resources(resources)
        if cluster is not None and client is not None:
            raise SessionError("pass either cluster= or client=, not both")
        if cluster is not None and not (isinstance(cluster, str)
                                        or hasattr(cluster, "scheduler_address")):
            raise SessionError(f"cluster must be a Dask cluster (LocalCluster, SLURMCluster, "
                               f"...) or a scheduler address string, got "
                               f"{type(cluster).__name__}")
        if client is not None and not (isinstance(client, str) or hasattr(client, "submit")):
            raise SessionError(f"client must be a distributed.Client or a scheduler address "
                               f"string, got {type(client).__name__}")
        if (cluster is not None or client is not None) and self._cluster_kwargs:
            raise SessionError("resources= configures the default LocalCluster only; with "
                               "cluster= or client= configure that cluster instead")
        self.cluster = cluster
        self.client = client
        self._owns_client = False
        self._owns_cluster = False
        self._token = secrets.token_hex(4)
        self._seq = 0
        self._nthreads = 0
        self._worker_resources: list[dict] | None = None
        self._futs: dict[str, Any] = {}
        self._submit_q: queue.SimpleQueue = queue.SimpleQueue()
        self._new_futs: deque = deque()    # submitted Dask futures, for the collector
        self._signal = threading.Event()
        self._stopping = False
        self._lost: str | None = None
        self._threads: list[threading.Thread] = []
        self._pickle_ok: dict[int, tuple[Any, str | None]] = {}
        self._started_tracker = False
        self._held: list = []                 # gathered futures not yet released
        self._held_bytes = 0

    # -- life cycle --------------------------------------------------------------------
    def capacity(self) -> int:
        if self._nthreads:
            return self._nthreads
        kw = self._cluster_kwargs
        if self.cluster is None and self.client is None and "n_workers" in kw:
            return kw["n_workers"] * kw.get("threads_per_worker", 1)
        return 0

    @property
    def dashboard_link(self) -> str | None:
        client = self.client
        return getattr(client, "dashboard_link", None) if client is not None else None

    async def _start(self) -> None:
        try:
            import distributed  # noqa: F401
        except ImportError as exc:
            raise BackendError(self.name, "the dask backend needs `distributed`; install "
                               "it with pip install 'rhapsody-lab[dask]'") from exc
        try:
            await asyncio.to_thread(self._connect)
        except BaseException:
            await asyncio.to_thread(self._close, [], [])  # nothing we started stays up
            raise
        for target, label in ((self._submitter, "submit"), (self._collector, "collect")):
            t = threading.Thread(target=target, daemon=True,
                                 name=f"rhapsody-{self.name}-{label}")
            t.start()
            self._threads.append(t)

    def _connect(self) -> None:
        from distributed import Client, LocalCluster
        client = self.client
        if isinstance(client, str):
            self.client = Client(client, timeout=10)
            self._owns_client = True
        elif client is not None:
            if getattr(client, "asynchronous", False):
                # an asynchronous client lives on its creator's loop; ours must not
                self.client = Client(client.scheduler.address, timeout=10)
                self._owns_client = True
        else:
            cluster = self.cluster
            if cluster is None:
                kw = {"dashboard_address": ":0", **self._cluster_kwargs}
                self._started_tracker = not _resource_tracker_running()
                cluster = self.cluster = LocalCluster(**kw)
                self._owns_cluster = True
            if isinstance(cluster, str) or getattr(cluster, "asynchronous", False):
                address = cluster if isinstance(cluster, str) else cluster.scheduler_address
                self.client = Client(address, timeout=10)
            else:  # share the cluster's I/O thread (fewer GIL hand-offs per message)
                self.client = Client(cluster, timeout=10)
            self._owns_client = True
        self._refresh_workers()

    def _refresh_workers(self) -> None:
        info = self.client.scheduler_info(n_workers=-1)
        workers = info.get("workers", {}).values()
        self._nthreads = sum(w.get("nthreads", 0) for w in workers)
        self._worker_resources = [dict(w.get("resources") or {}) for w in workers]

    async def _stop(self) -> None:
        self._stopping = True
        self._submit_q.put(None)
        self._signal.set()
        client = self.client
        if client is not None:
            futs = list(self._futs.values())
            execs = [uid for uid, t in self._live.items() if t.get("executable") is not None]
            await asyncio.to_thread(self._close, futs, execs)
        for t in self._threads:
            await asyncio.to_thread(t.join, 5)
        self._drain()
        self._held = []

    def _close(self, futs: list, execs: list[str]) -> None:
        client = self.client
        if isinstance(client, str):
            client = None
        try:
            if futs and client.status == "running":
                client.cancel(futs, force=True)
            if execs and client.status == "running":
                client.run(_kill_on_worker, execs)
        except Exception:
            pass
        if self._owns_client and client is not None:
            try:
                client.close(timeout=10)
            except Exception:
                pass
        if self._owns_cluster and self.cluster is not None:
            try:
                self.cluster.close(timeout=20)
            except Exception:
                pass
            if self._started_tracker:
                _stop_resource_tracker()

    # -- submission --------------------------------------------------------------------
    def check_task(self, task: dict) -> None:
        _validate_task_kwargs(task)
        if task.get("executable") is not None:
            exec_options(task)
        res = (task.get("task_backend_specific_kwargs") or {}).get("resources")
        if res and self._owns_cluster and self._worker_resources is not None:
            # a LocalCluster we built never grows new kinds of workers: refuse now
            if not any(all(w.get(k, 0) >= v for k, v in res.items())
                       for w in self._worker_resources):
                raise ResourceError(task["uid"], ",".join(res),
                                    f"no worker of this LocalCluster offers {res}; give its "
                                    f"workers resources, e.g. DaskExecutionBackend("
                                    f"resources={{'resources': {res}}})")

    def _check_alive(self) -> None:
        client = self.client
        if self._lost is None and client is not None and client.status != "running":
            self._lost = (f"lost the Dask scheduler (client status {client.status!r}); "
                          "create a new backend")
        if self._lost is not None:
            if self._backend_state == "RUNNING":
                self._backend_state = "FAILED"
                self._fail_all(self._lost)
            raise BackendError(self.name, self._lost)

    async def submit_tasks(self, tasks: Sequence[dict]) -> None:
        self._ensure_running()
        self._check_alive()
        for task in tasks:
            self.check_task(task)
        self._accept(tasks)
        self._submit_q.put(list(tasks))

    async def cancel_task(self, uid: str) -> bool:
        """Cancel ``uid``: True (CANCELED) unless it is a function that already started.

        A task not started yet never starts (every worker refuses it, ``_dask_gate``); a
        running executable's process group is killed. A running function cannot be
        stopped (a Dask worker runs it in a thread), so this returns False and the task
        keeps its state and runs to its end.
        """
        task = self._live.get(uid)
        if task is None:
            return False
        self._check_alive()
        try:
            started = await asyncio.to_thread(claim, self.client, uid)
        except Exception as exc:  # the scheduler is gone: the watchdog fails the tasks
            raise BackendError(self.name, f"could not cancel task {uid}: {exc}") from exc
        if uid not in self._live:  # it ended meanwhile (or a worker refused it: CANCELED)
            return task["state"] == CANCELED
        is_exec = task.get("executable") is not None
        if started is not None and not is_exec:
            self.move(task, RUNNING, *started)  # it did start: show it, let it finish
            return False
        fut = self._futs.pop(uid, None)
        self._finish(task, CANCELED, time.time(), reason="canceled by request")
        if fut is not None:
            await asyncio.to_thread(self._cancel_remote, [fut], [uid] if is_exec else [])
        return True

    def _cancel_remote(self, futs: list, execs: list[str]) -> None:
        try:
            self.client.cancel(futs, force=True)
            if execs:
                self.client.run(_kill_on_worker, execs)
        except Exception:
            pass  # the scheduler is gone; the watchdog reports it

    # -- submitter thread --------------------------------------------------------------
    def _submitter(self) -> None:
        get = self._submit_q.get
        while True:
            batch = get()
            if batch is None:
                return
            try:  # take everything queued so far: bigger bulk submissions
                while True:
                    more = self._submit_q.get_nowait()
                    if more is None:
                        self._submit_q.put(None)
                        break
                    batch.extend(more)
            except queue.Empty:
                pass
            if self._stopping:
                return
            try:
                self._submit_batch(batch)
            except Exception as exc:  # the scheduler went away mid-submit
                reason = BackendError(self.name, f"could not submit to Dask: {exc}")
                for task in batch:
                    if task["uid"] in self._live and task["uid"] not in self._futs:
                        self._report_failure(task, reason, str(reason))

    def _submit_batch(self, batch: list) -> None:
        live = self._live
        groups: dict[tuple, list] = {}
        for task in batch:
            if task["uid"] not in live:
                continue  # canceled before it reached Dask
            kind = "f" if task.get("function") is not None else "x"
            key = (kind, _dask_options(task))
            g = groups.get(key)
            if g is None:
                groups[key] = [task]
            else:
                g.append(task)
        for (kind, opts), tasks in groups.items():
            keys, payloads = [], []
            for task in tasks:
                self._seq += 1
                if kind == "f":
                    fn = task["function"]
                    prefix = getattr(fn, "__name__", None) or "rhapsody"
                    payloads.append((task["uid"], fn, task["args"] or (),
                                     task["kwargs"] or {}))
                else:
                    prefix = os.path.basename(str(task["executable"])) or "exec"
                    payloads.append((task["uid"], task["executable"],
                                     [str(a) for a in task["arguments"] or ()],
                                     exec_options(task)))
                prefix = _SAFE.sub("_", prefix).strip("_") or "rhapsody"
                if not prefix[0].isalpha():
                    prefix = "rhapsody_" + prefix
                keys.append(f"{prefix}-{self._token}-{self._seq}")
            func = _call if kind == "f" else _run_exec
            kw = dict(opts)
            if "workers" in kw and isinstance(kw["workers"], tuple):
                kw["workers"] = list(kw["workers"])
            if "resources" in kw:
                kw["resources"] = dict(kw["resources"])
            if kind == "f":
                # Dask serialises on its I/O thread and only logs a failure there (the
                # futures would never finish): refuse unpicklable tasks here, one by one.
                bad = [i for i, task in enumerate(tasks) if self._unpicklable(task)]
                if bad:
                    for i in reversed(bad):
                        del tasks[i], payloads[i], keys[i]
                    if not tasks:
                        continue
            futs = self.client.map(func, payloads, key=keys, pure=False, **kw)
            self._track(tasks, futs)

    def _unpicklable(self, task: dict) -> bool:
        """Fail ``task`` if its function or arguments cannot be pickled; True if so."""
        fn = task["function"]
        cache = self._pickle_ok
        field, err = "function", cache.get(id(fn), (None, None))[1]
        if id(fn) not in cache:
            err = _pickle_error(fn)
            if len(cache) > 4096:
                cache.clear()
            cache[id(fn)] = (fn, err)  # holding fn keeps its id from being reused
        if err is None and not _plain(task["args"], task["kwargs"]):
            field, err = "args", _pickle_error((task["args"], task["kwargs"]))
        if err is None:
            return False
        what = getattr(fn, "__qualname__", repr(fn)) if field == "function" else "its arguments"
        msg = (f"not sent to Dask: {what} cannot be pickled "
               f"({err}); define functions at module level (or in the notebook) and do not "
               "capture locks, open files, sockets or clients")
        self._report_failure(task, TaskValidationError(task["uid"], msg, field=field), msg)
        return True

    def _track(self, tasks: list, futs: list) -> None:
        store = self._futs
        live = self._live
        orphans = []
        for task, fut in zip(tasks, futs, strict=True):
            if fut is None:
                continue
            fut._rhapsody_task = task
            uid = task["uid"]
            store[uid] = fut
            if uid not in live:  # canceled while we were submitting
                store.pop(uid, None)
                orphans.append(fut)
                continue
            self._new_futs.append(fut)
        self._signal.set()
        if orphans:
            try:
                self.client.cancel(orphans, force=True)
            except Exception:
                pass

    # -- collector thread --------------------------------------------------------------
    def _collector(self) -> None:
        new = self._new_futs
        signal = self._signal
        pending: list = []
        last_refresh = last_running = time.monotonic()
        posted: set = set()  # keys already reported RUNNING by _poll_running
        idle = 0.0
        down_since: float | None = None
        while not self._stopping:
            if not pending and not new:
                signal.wait(_TICK)
                signal.clear()
                idle = 0.0
            else:
                period = min(_POLL_MAX, _POLL_MIN + _POLL_PER_PENDING * len(pending))
                time.sleep(max(period, idle))
            while new:
                pending.append(new.popleft())
            if pending:
                still, done = [], []
                for fut in pending:
                    (still if fut.status in ("pending", "lost") else done).append(fut)
                pending = still
                if done:
                    idle = 0.0
                    for i in range(0, len(done), _GATHER_MAX):
                        if self._stopping:
                            break
                        self._collect(done[i:i + _GATHER_MAX])
                else:
                    idle = min(_POLL_MAX, max(idle * 2, _POLL_MIN))
                if posted:
                    posted.difference_update([f.key for f in done])
            if self._held and (not pending or len(self._held) > _HOLD_KEYS
                               or self._held_bytes > _HOLD_BYTES):
                self._held = []
                self._held_bytes = 0
            # watchdog: scheduler loss, worker count, tasks running for a while
            client = self.client
            status = getattr(client, "status", "closed")
            now = time.monotonic()
            if status != "running":
                down_since = down_since or now
                if now - down_since > 1.0:
                    self._declare_lost(status)
            else:
                down_since = None
                if pending and now - last_running > _RUNNING_POLL:
                    last_running = now
                    try:
                        self._poll_running(pending, posted)
                    except Exception:
                        pass
                if now - last_refresh > 2.0:
                    last_refresh = now
                    try:
                        self._refresh_workers()
                    except Exception:
                        pass

    def _poll_running(self, pending: list, posted: set) -> None:
        """Report RUNNING for tasks a worker holds (long tasks show up before they end).

        Dask's ``processing`` also lists the task or two a worker has queued next, so this
        time is approximate (within ``_RUNNING_POLL``); a task that ends before the poll
        gets its exact start from the worker instead.
        """
        by_key = None
        t = time.time()
        for addr, keys in self.client.processing().items():
            for key in keys:
                if key in posted:
                    continue
                if by_key is None:
                    by_key = {f.key: f for f in pending}
                fut = by_key.get(key)
                if fut is not None:
                    posted.add(key)
                    self._done.append((fut._rhapsody_task, RUNNING, t, addr))
        if self._done:
            self._wake_drain()

    def _declare_lost(self, status: str) -> None:
        """The scheduler is gone: the loop fails every live task and the backend."""
        if self._lost is None and not self._stopping:
            self._lost = (f"lost the Dask scheduler (client status {status!r}); create a "
                          "new backend")
            self._done.append((None, _LOST, 0.0, None))
            self._wake_drain()

    def _collect(self, futs: list) -> None:
        live = self._live
        ok, ok_tasks = [], []
        out = self._done.append
        for fut in futs:
            task = fut._rhapsody_task
            uid = task["uid"]
            if self._futs.get(uid) is fut:
                del self._futs[uid]
            if uid not in live:
                continue
            status = fut.status
            if status == "finished":
                ok.append(fut)
                ok_tasks.append(task)
            elif status == "error":
                try:
                    exc = fut.exception(timeout=5)
                    tb = "".join(traceback.format_exception(exc))
                except Exception as e:
                    exc, tb = e, repr(e)
                self._report_failure(task, exc, tb)
            elif self.client.status != "running":  # the client lost its scheduler
                self._declare_lost(self.client.status)
            else:  # cancelled (not by us: cancel_task finishes at once) or lost
                reason = BackendError(self.name, f"Dask dropped task {uid} ({status}); "
                                      "the scheduler connection was lost or it was canceled "
                                      "outside rhapsody_lab")
                self._report_failure(task, reason, str(reason))
        if ok:
            try:
                results = self.client.gather(ok)
            except Exception:
                results = []
                for task, fut in zip(ok_tasks, ok, strict=True):
                    try:
                        results.append(self.client.gather(fut))
                    except Exception as exc:
                        msg = (f"the result of task {task['uid']} could not be fetched "
                               f"from Dask ({type(exc).__name__}: {exc})")
                        self._report_failure(task, BackendError(self.name, msg), msg)
                        results.append(None)
            self._held.extend(ok)
            size = 0
            for task, res in zip(ok_tasks, results, strict=True):
                if res is None:
                    continue
                if task.get("function") is not None:
                    good, value, tb, t0, t1, slot = res
                    size += sys.getsizeof(value)
                    if good is None:  # refused at the gate: a cancel came first
                        out((task, CANCELED, t1, slot))
                    elif good:
                        task["return_value"] = value
                        task["stdout"] = result_text(value)
                        task["exit_code"] = 0
                        out((task, RUNNING, t0, slot))
                        out((task, DONE, t1, slot))
                    else:
                        task["exception"] = value
                        task["stderr"] = tb
                        task["exit_code"] = 1
                        out((task, RUNNING, t0, slot))
                        out((task, FAILED, t1, slot))
                else:
                    state, stdout, stderr, code, t0, t1, slot = res
                    task["stdout"] = stdout
                    task["stderr"] = stderr
                    task["exit_code"] = code
                    if t0 is not None:
                        out((task, RUNNING, t0, slot))
                    out((task, state, t1, slot))
            self._held_bytes += size
        if self._done:
            self._wake_drain()

    def _report_failure(self, task: dict, exc: BaseException, tb: str) -> None:
        task["exception"] = exc
        task["stderr"] = tb
        task["exit_code"] = 1
        self._done.append((task, FAILED, time.time(), None))
        self._wake_drain()

    # -- completion (event loop): the one drain, with the scheduler-lost record -------
    def _on_record(self, record: tuple) -> None:
        if record[1] != _LOST:
            super()._on_record(record)
        if self._backend_state == "RUNNING":
            self._backend_state = "FAILED"
        self._fail_all(self._lost or "lost the Dask scheduler")

    def _fail_all(self, message: str) -> None:
        now = time.time()
        for task in list(self._live.values()):
            exc = BackendError(self.name, message)
            task["exception"] = exc
            task["stderr"] = str(exc)
            task["exit_code"] = 1
            self._futs.pop(task["uid"], None)
            self._finish(task, FAILED, now)


def _resource_tracker_running() -> bool:
    try:
        from multiprocessing import resource_tracker
        return resource_tracker._resource_tracker._pid is not None
    except Exception:
        return True


def _stop_resource_tracker() -> None:
    """End the helper process that spawning worker processes started (no child left)."""
    try:
        from multiprocessing import resource_tracker
        resource_tracker._resource_tracker._stop()
    except Exception:
        pass
