"""DragonExecutionBackend: the five execution modes of RHAPSODY on a Dragon runtime.

Mode by ``task_backend_specific_kwargs`` (see ``_dragon_spec``): a function with no
template runs *native*, in worker processes fed chunks of tasks through Dragon queues
(``_dragon_pool``; measured here: ~4-5x the tasks/s of Dragon's own ``multiprocessing``
Pool at a fraction of its driver CPU, and ~2 tasks/s for Dragon's ``Batch``); a
``process_template`` runs the function or executable in one Dragon process,
``process_templates`` / ``type="mpi"`` + ``ranks`` as a job of several processes
(``_dragon_procs``). A function with only ``timeout`` runs in its own process, so the
timeout can end it.

Nothing here blocks the event loop: a feeder thread packs native tasks into chunks (at
most a few chunks in flight per worker, so chunks grow with the backlog), the result
thread and the launcher threads append completions to one deque and wake the loop once
per batch, and the loop finishes them. A watcher thread hears which worker started which
chunk; if that worker dies, the chunk's tasks rerun one by one (so only the task that
kills its worker fails) and a new worker takes its place. Scripts must run under
``dragon -s script.py``.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import repeat
from operator import is_
from typing import Any

from ..api.backend import BaseBackend, record_failure
from ..api.errors import BackendError, SessionError
from ..api.states import CANCELED, RUNNING
from ._dragon_native import _CANCELED, NativePoolMixin
from ._dragon_spec import NodeInfo, plan
from ._subprocess import spill_to_files

__all__ = ["DragonExecutionBackend", "DragonExecutionBackendV3"]

_is_none = partial(is_, None)
_MAX_LAUNCHERS = 64   # process/job tasks starting or running at once

_NOT_UNDER_DRAGON = (
    "no Dragon runtime in this process; start the script with `dragon -s script.py` "
    "(single node) or `dragon script.py` inside an allocation, not with `python`")


class DragonExecutionBackend(NativePoolMixin, BaseBackend):
    """Runs function and executable tasks on the Dragon runtime this script runs in.

    ``num_workers`` sizes the native-function pool (default: every CPU of the runtime's
    nodes). ``batch_kwargs`` is accepted for compatibility with rhapsody-py 0.6.0 (its
    ``num_workers`` key is honoured, the rest ignored).
    """

    #: Observation waits for the stream's 0.1 s timer (unless 50,000 events are pending):
    #: the loop's time here is GIL time taken from the feeder and result threads, whose
    #: Dragon queue calls each give the GIL up and wait for it back (30 us alone, 6-13 ms
    #: beside a busy thread). Deferring it: 1.19x null tasks/s through a Session (A/B).
    flush_min = 50_000
    drain_budget = 4_000  # a chunk of null tasks is one record, finished whole
    drain_step = 512
    drain_seconds = None

    def __init__(self, name: str = "dragon", num_workers: int | None = None,
                 batch_kwargs: dict | None = None, max_launchers: int = _MAX_LAUNCHERS):
        super().__init__(name)
        if batch_kwargs is not None and not isinstance(batch_kwargs, dict):
            raise SessionError(f"batch_kwargs must be a dict, got {type(batch_kwargs).__name__}")
        if num_workers is None and batch_kwargs:
            num_workers = batch_kwargs.get("num_workers")
        for field, v in (("num_workers", num_workers), ("max_launchers", max_launchers)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise SessionError(f"{field} must be an integer >= 1, got {v!r}")
        self._workers = num_workers
        self._max_launchers = max_launchers
        self._nodes: list[NodeInfo] = []
        self._workers_set: Any = None  # the native mode's ChunkWorkers
        self._token = uuid.uuid4().hex
        self._native_q: queue.SimpleQueue = queue.SimpleQueue()
        self._feeder: threading.Thread | None = None
        self._inflight: threading.Semaphore | None = None
        self._task_seconds = 0.01  # running estimate of one native task's run time
        self._fids: dict[Any, int] = {}
        self._blobs: dict[int, bytes] = {}
        self._fid_lock = threading.Lock()
        self._announced: set[int] = set()  # chunks of one task shown RUNNING at their start
        self._chunks: dict[int, tuple] = {}  # chunk id -> (tasks, permit, blobs, items)
        self._next_chunk = 0
        self._watcher: threading.Thread | None = None
        self._stopped = threading.Event()  # set by close (and wakes the watcher at once)
        self._next_fid = 0
        self._launcher: ThreadPoolExecutor | None = None
        self._ranks: dict[str, Any] = {}
        self.startup_seconds: float | None = None
        self.seen_pids: set[int] = set()  # worker pids seen (for leak checks)

    # -- life cycle --------------------------------------------------------------------
    def capacity(self) -> int:
        return self._workers or 1

    async def _start(self) -> None:
        try:
            import dragon  # noqa: F401
        except ImportError as exc:
            raise BackendError(self.name, "dragonhpc is not installed; install it with "
                               "`pip install 'rhapsody-lab[dragon]'` and run the script "
                               "with `dragon -s script.py`") from exc
        if not os.environ.get("DRAGON_MY_PUID") or not os.environ.get("DRAGON_INF_PD"):
            raise BackendError(self.name, _NOT_UNDER_DRAGON)
        t0 = time.time()
        await asyncio.to_thread(self._start_runtime)
        self.startup_seconds = time.time() - t0
        self._inflight = threading.Semaphore(2 * self._workers + 2)
        self._launcher = ThreadPoolExecutor(self._max_launchers,
                                            thread_name_prefix=f"rhapsody-{self.name}-launch")
        self._feeder = threading.Thread(target=self._feed, daemon=True,
                                        name=f"rhapsody-{self.name}-feeder")
        self._feeder.start()
        self._watcher = threading.Thread(target=self._watch, daemon=True,
                                         name=f"rhapsody-{self.name}-watch")
        self._watcher.start()

    def _start_runtime(self) -> None:
        from ._dragon_launch import runtime_nodes
        nodes = self._nodes = runtime_nodes()
        if self._workers is None:
            self._workers = max(1, sum(len(n.cpus) for n in nodes))
        from ._dragon_pool import ChunkWorkers
        workers = ChunkWorkers(self._workers, self._chunk_done, self._chunk_failed, self.name)
        workers.start()
        self._workers_set = workers

    async def _stop(self) -> None:
        self._claim_all_canceled()
        self._native_q.put(None)
        self._stopped.set()
        ranks = list(self._ranks.values())
        workers, self._workers_set = self._workers_set, None

        def stop_all() -> None:
            threads = [threading.Thread(target=r.kill, daemon=True) for r in ranks]
            for t in threads:
                t.start()
            if workers is not None:
                workers.stop()
            for t in threads:
                t.join(10)
            if self._launcher is not None:
                self._launcher.shutdown(wait=True, cancel_futures=True)
            if self._feeder is not None:
                self._feeder.join(5)
            if self._watcher is not None:
                self._watcher.join(5)

        await asyncio.to_thread(stop_all)
        self._drain()

    # -- submission --------------------------------------------------------------------
    def check_task(self, task: dict) -> None:
        if task.get("task_backend_specific_kwargs"):
            plan(task, self._nodes)

    async def submit_tasks(self, tasks: Sequence[dict]) -> None:
        self._ensure_running()
        if not tasks:
            return
        if not any(map(dict.get, tasks, repeat("task_backend_specific_kwargs"))) and \
                not any(map(_is_none, map(dict.get, tasks, repeat("function")))):
            self._accept(tasks)  # all native functions (the common case): one hand-over
            self._native_q.put(list(tasks))
            return
        plans = [plan(t, self._nodes) if (t.get("task_backend_specific_kwargs")
                                          or t.get("function") is None) else None
                 for t in tasks]  # validate all before accepting any
        self._accept(tasks)
        native = []
        for task, p in zip(tasks, plans, strict=True):
            if p is None:
                native.append(task)
            else:
                self._launcher.submit(self._run_procs, task, p)
        if native:
            self._native_q.put(native)

    async def cancel_task(self, uid: str) -> bool:
        started = self._cancel_unstarted(uid)
        if started is not False:
            return bool(started)
        ranks = self._ranks.get(uid)
        if ranks is not None:
            threading.Thread(target=ranks.kill, daemon=True).start()
            return True  # the launcher reports CANCELED once the processes are gone
        return False  # a function running in a pool worker cannot be interrupted safely

    # -- process and job modes: launcher threads ------------------------------------------
    def _run_procs(self, task: dict, p: Any) -> None:
        from ._dragon_procs import RankSet, run_plan
        uid = task["uid"]
        ranks = RankSet()
        self._ranks[uid] = ranks  # before the claim, so a cancel after it finds the ranks
        if self._claims.setdefault(uid, "proc") is _CANCELED:
            self._ranks.pop(uid, None)
            return
        if self._stopped.is_set():  # shutdown began after this task was claimed: start nothing
            ranks.kill()
        slot: list = [None]

        def on_running(puid: Any) -> None:
            slot[0] = puid
            self.report(task, RUNNING, time.time(), puid)

        blob = None
        try:
            if task.get("function") is not None:
                blob = self._fid(task["function"])[1]
            state = run_plan(task, p, blob, ranks, on_running)
            if task.get("capture_stdio") and blob is None:
                spill_to_files(task, self._work_dir)  # executables only, as in RHAPSODY
        except Exception as exc:  # never lose a task to an unexpected error
            threading.Thread(target=_end_quietly, args=(ranks,), daemon=True).start()
            state = record_failure(task, exc)
        finally:
            self._ranks.pop(uid, None)
        if ranks.killed and state != CANCELED:
            state = CANCELED
        self.report(task, state, time.time(), slot[0])


#: the backend's former name (RHAPSODY's registry still knows it as "dragon_v3")
DragonExecutionBackendV3 = DragonExecutionBackend



def _end_quietly(ranks: Any) -> None:
    from ._dragon_procs import _end
    _end(list(ranks.procs))
