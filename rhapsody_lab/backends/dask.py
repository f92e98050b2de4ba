"""DaskExecutionBackend: tasks on any Dask cluster (LocalCluster by default).

Where time goes (ANCHORS.md): the Dask client and scheduler cost ~2 ms of CPU per task, so
this backend adds as little as it can around them and never on the event loop:

- ``submit_tasks`` only records the tasks and queues them for a *submitter* thread, which
  hands everything queued so far to Dask in bulk (one ``client.map`` per group of tasks
  sharing Dask options). Keys are ``<function-name>-<backend token>-<n>``: a common prefix
  and ``-`` separators keep Dask's TaskGroups few (a dotted uid makes each task its own
  group and the scheduler slows down with their number). Small function tasks go in
  *chunks*, many to one Dask task, each keeping its own states and outcome: the Dask
  chunks fast path (``_dask_chunks``, its gain measured there).
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
import contextlib
import os
import queue
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..api.backend import BaseBackend
from ..api.errors import BackendError, ResourceError, SessionError
from ..api.states import CANCELED, FAILED, RUNNING
from ._at_exit import before_thread_joins
from ._dask_chunks import ChunkFeeder
from ._dask_gate import claim
from ._dask_tasks import (
    _TASK_KEYS,
    _kill_on_worker,
    _validate_cluster_resources,
    _validate_task_kwargs,
)
from ._dask_threads import _LOST, DaskThreads
from ._options import check_keys
from ._subprocess import _KNOWN as _EXEC_KEYS
from ._subprocess import exec_options

__all__ = ["DaskExecutionBackend"]

#: backends started and not shut down yet
_LIVE: weakref.WeakSet = weakref.WeakSet()
_EXIT_WAIT = 5.0  # seconds the interpreter's exit waits for the workers to kill children


def _kill_children_at_exit() -> None:
    """At exit, a session never closed: its executables' children on the workers are killed
    (the workers' own exit can come too late: their nanny kills them first, and a child
    in its own session outlives that), while the client and cluster are still up."""
    for backend in list(_LIVE):
        t = threading.Thread(target=backend._kill_running, daemon=True)
        try:
            t.start()
        except RuntimeError:  # no new threads this late (newer Pythons): ask inline
            backend._kill_running()
            continue
        t.join(_EXIT_WAIT)  # an unreachable scheduler must not hold the exit


class DaskExecutionBackend(DaskThreads, BaseBackend):
    """Runs function and executable tasks on a Dask cluster.

    ``resources`` configures the default ``LocalCluster`` (e.g. ``{"n_workers": 4}``);
    ``cluster=`` (any Dask cluster object, or a scheduler address) or ``client=`` (a
    ``distributed.Client`` or an address) use an existing one, which is left running at
    shutdown. Per task, ``task_backend_specific_kwargs`` may carry Dask ``resources``
    (e.g. ``{"GPU": 1}``), ``retries`` (a function that raises runs again, in its worker,
    up to that many times), ``priority``, ``workers``, and for executables
    ``cwd``, ``env``, ``shell``, ``timeout``. ``chunks=True`` (the default) sends small
    function tasks submitted together in chunks (``_dask_chunks``); False: one Dask task
    each.
    """

    #: A task's start is seen twice: by the look at what workers hold, then with its result
    starts_may_repeat = True

    def __init__(self, resources: dict | None = None, name: str = "dask", cluster: Any = None,
                 client: Any = None, chunks: bool = True):
        super().__init__(name)
        if not isinstance(chunks, bool):
            raise SessionError(f"chunks must be True (small function tasks travel in "
                               f"chunks) or False (one Dask task each), got {chunks!r}")
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
        self._chunks = ChunkFeeder(self) if chunks else None

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
            await asyncio.to_thread(self._close, [])  # nothing we started stays up
            raise
        before_thread_joins(_kill_children_at_exit)
        _LIVE.add(self)
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
                with _environ_kept():
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

    def _kill_running(self, execs: list[str] | None = None) -> None:
        """Kill the children of this backend's running executables (``execs``: their uids,
        by default every live executable task's) on the workers."""
        client = self.client
        if execs is None:
            execs = [uid for uid, t in list(self._live.items())
                     if t.get("executable") is not None]
        if execs and client is not None and not isinstance(client, str):
            with contextlib.suppress(Exception):
                if client.status == "running":
                    client.run(_kill_on_worker, execs)

    async def _stop(self) -> None:
        _LIVE.discard(self)
        self._stopping = True
        self._submit_q.put(None)
        self._signal.set()
        client = self.client
        if client is not None:
            futs = list({id(f): f for f in self._futs.values()}.values())
            await asyncio.to_thread(self._close, futs)
        for t in self._threads:
            await asyncio.to_thread(t.join, 5)
        self._drain()
        self._held = []

    def _close(self, futs: list) -> None:
        client = self.client
        if isinstance(client, str):
            client = None
        try:
            if futs and client.status == "running":
                client.cancel(futs, force=True)
        except Exception:
            pass
        self._kill_running()
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
        check_keys(task, self.name, (*_TASK_KEYS, *_EXEC_KEYS), executable_only=_EXEC_KEYS)
        _validate_task_kwargs(task)
        if task.get("executable") is not None:
            exec_options(task)

    def _unmet(self, task: dict) -> ResourceError | None:
        """Why no worker of a LocalCluster we built can run ``task`` (it never grows new
        kinds of workers), or None; a task asking for what no worker has FAILS with it."""
        res = (task.get("task_backend_specific_kwargs") or {}).get("resources")
        if not res or any(all(w.get(k, 0) >= v for k, v in res.items())
                          for w in self._worker_resources or ()):
            return None
        return ResourceError(task["uid"], "task_backend_specific_kwargs.resources",
                             f"no worker of this LocalCluster offers {res} (workers have "
                             f"{self._worker_resources}); give its workers resources, e.g. "
                             f"DaskExecutionBackend(resources={{'resources': {res}}})")

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
        if self._owns_cluster and self._worker_resources is not None:
            tasks = self._fail_unmet(tasks)
        if tasks:
            self._submit_q.put(list(tasks))

    def _fail_unmet(self, tasks: Sequence[dict]) -> list[dict]:
        """FAIL the tasks no worker can run (with the reason); returns the others."""
        kept, now = [], time.time()
        for task in tasks:
            exc = self._unmet(task)
            if exc is None:
                kept.append(task)
                continue
            task.update(exception=exc, stdout="", stderr=f"[rhapsody_lab] {exc}", exit_code=1)
            self._finish(task, FAILED, now)
        return kept

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
        if fut is not None and fut._rhapsody_task.__class__ is list and any(
                t["uid"] in self._live for t in fut._rhapsody_task):
            fut = None  # its chunk runs others: the gate skips this one
        if fut is not None:
            await asyncio.to_thread(self._cancel_remote, [fut], [uid] if is_exec else [])
        return True

    def _cancel_remote(self, futs: list, execs: list[str]) -> None:
        try:
            self.client.cancel(futs, force=True)
        except Exception:
            return  # the scheduler is gone; the watchdog reports it
        self._kill_running(execs)

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


@contextlib.contextmanager
def _environ_kept():
    """Undo what Dask's nannies write into *this* process's ``os.environ`` while they spawn.

    ``distributed.nanny.pre-spawn-environ`` (``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``,
    ...) is set in the parent before each worker starts and never taken back, so every
    later child of the kernel (a Flux job, an executable task) would inherit it.
    """
    import dask
    keys = list(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    before = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
