"""ConcurrentExecutionBackend: a thread or process pool on the local machine.

Where time goes matters here (see ANCHORS.md): the event loop never creates one asyncio
task or one ``concurrent.futures.Future`` per thread task. Worker threads pull tasks from
one queue and ``report`` each start (RUNNING) and outcome to the backend's one drain
(``api.lifecycle``), which wakes the loop at most once per batch.
Process-pool functions are shipped with cloudpickle once per distinct function, and
executables always run from driver threads (a subprocess needs no worker process).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from ..api.backend import CANCELED_CLAIM, BaseBackend, record_failure, result_text
from ..api.errors import SessionError
from ..api.states import CANCELED, DONE, RUNNING
from ._at_exit import before_thread_joins
from ._options import check_keys
from ._pool import PoolFeeder
from ._pool_starts import StartListener
from ._subprocess import _KNOWN as _EXEC_KEYS
from ._subprocess import ProcessTable, capture_dir, exec_options, run_executable

__all__ = ["ConcurrentExecutionBackend"]

_CANCELED = CANCELED_CLAIM  # the engine's claim marker (api.backend)
_PUMP_CHUNK = 512      # process-pool tasks handed over per loop callback
#: the drain tick: while executables end with more waiting in the queue, the loop drains
#: every this many seconds and the workers do not wake it (they do once a tick found
#: nothing, or when the queue is empty: the last tasks of a batch and a chain of one task
#: at a time are delivered at once). At the spawn limit (~2,500 ends/s) the loop wakes 100
#: times a second, not once or twice per task, and leaves the GIL and the cores to
#: spawning: /bin/true x1000 vs 2 threads of subprocess.run went from 0.65 (a wake per task)
#: to 0.85-0.92 with a 2 ms tick, and to 0.89-1.03 with this one (medians of 7-11
#: interleaved reps; bench/bench_concurrent.py). A 25 ms tick measured no better.
#: A DONE shows at most a tick later while the queue is busy.
_EXEC_TICK = 0.010


#: backends started and not shut down yet
_LIVE: weakref.WeakSet = weakref.WeakSet()


def _release_at_exit() -> None:
    """At interpreter exit, before ``concurrent.futures`` joins its executors' threads: the
    workers of a backend never shut down leave (else the join waits for workers in a
    ThreadPoolExecutor's threads forever, and the interpreter, a notebook kernel, never
    exits), their executables' children killed (``ProcessTable``'s own hook does the same
    for every table, Dask workers' included)."""
    for backend in list(_LIVE):
        backend._release_workers()


def _default_workers() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


class ConcurrentExecutionBackend(BaseBackend):
    """Runs functions and executables on local threads (default) or processes.

    ``executor`` may be a ``ThreadPoolExecutor`` (its threads run this backend's workers)
    or a ``ProcessPoolExecutor`` (functions run in its processes); its ``max_workers``
    sets the slot count. ``max_workers`` alone builds a thread pool of that size.
    """

    def __init__(self, executor: Executor | None = None, name: str = "concurrent",
                 max_workers: int | None = None):
        super().__init__(name)
        if executor is not None and not isinstance(executor, ThreadPoolExecutor |
                                                   ProcessPoolExecutor):
            raise SessionError(
                f"executor must be a ThreadPoolExecutor or ProcessPoolExecutor, got "
                f"{type(executor).__name__}; for Dask use DaskExecutionBackend")
        if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(
                max_workers, int) or max_workers < 1):
            raise SessionError(f"max_workers must be an integer >= 1, got {max_workers!r}")
        self.executor = executor
        self._processes = isinstance(executor, ProcessPoolExecutor)
        if executor is not None:
            self._workers = executor._max_workers  # type: ignore[attr-defined]
        else:
            self._workers = max_workers or _default_workers()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._procs = ProcessTable()
        self._pump_scheduled = False
        self._ticking = False  # the loop drains every _EXEC_TICK (see _exec_ended)
        self._starts: StartListener | None = None  # process pools: workers say who starts
        self._feeder = PoolFeeder(executor, self._workers, self._name, self.report,
                                  self._wake_drain) if self._processes else None

    # -- life cycle --------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``"threads"`` or ``"processes"``."""
        return "processes" if self._processes else "threads"

    def capacity(self) -> int:
        return self._workers

    async def _start(self) -> None:
        if self._processes:
            # Start every worker process now, before this backend starts threads: a fork
            # while other threads hold locks can deadlock the child (or the pool).
            futs = [self.executor.submit(os.getpid) for _ in range(self._workers)]
            await asyncio.gather(*(asyncio.wrap_future(f) for f in futs))
        if self._feeder is not None:
            self._starts = StartListener(self._started_in_pool)
            self._feeder.starts = self._starts.address
        before_thread_joins(_release_at_exit)
        _LIVE.add(self)
        if isinstance(self.executor, ThreadPoolExecutor):
            for slot in range(self._workers):
                self.executor.submit(self._worker, slot)
            return
        for slot in range(self._workers):
            t = threading.Thread(target=self._worker, args=(slot,), daemon=True,
                                 name=f"rhapsody-{self.name}-{slot}")
            t.start()
            self._threads.append(t)

    async def _stop(self) -> None:
        self._claim_all_canceled()
        self._release_workers()
        if self._feeder is not None:
            self._feeder.cancel_all()
            self.executor = self._feeder.executor  # it may have replaced a broken pool
            procs = list((getattr(self.executor, "_processes", None) or {}).values())
            self.executor.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                if p.is_alive():
                    p.terminate()
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: [p.join(5) for p in procs])
        elif self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        if self._starts is not None:
            self._starts.close()
        self._drain()  # deliver what already finished before the rest become CANCELED

    def _release_workers(self) -> None:
        """Kill running executables' children and let every worker thread return."""
        _LIVE.discard(self)
        self._procs.kill_all()
        for _ in range(self._workers):
            self._queue.put(None)

    # -- submission --------------------------------------------------------------------
    def check_task(self, task: dict) -> None:
        check_keys(task, self.name, _EXEC_KEYS, executable_only=_EXEC_KEYS)
        if task.get("executable") is not None:
            exec_options(task)

    async def submit_tasks(self, tasks: Sequence[dict]) -> None:
        self._ensure_running()
        self._accept(tasks)
        if self._feeder is not None:
            put = self._queue.put
            pending = self._feeder.pending
            for task in tasks:
                if task["function"] is not None:
                    pending.append(task)
                else:
                    put(task)
            if pending and not self._pump_scheduled:
                self._pump_scheduled = True
                self._loop.call_soon(self._pump)
        else:
            put = self._queue.put
            for task in tasks:
                put(task)

    async def cancel_task(self, uid: str) -> bool:
        started = self._cancel_unstarted(uid)
        if started is not False:
            return bool(started)
        task = self._live[uid]
        if task.get("executable") is not None and self._procs.kill(uid):
            return True  # the worker reports CANCELED once the process group is gone
        return False  # a running Python function cannot be interrupted safely

    # -- worker threads ----------------------------------------------------------------
    def _worker(self, slot: int) -> None:
        get = self._queue.get
        claims = self._claims
        done = self._done.append
        clock = time.time
        wake = self._wake_drain
        while True:
            task = get()
            if task is None:
                return
            uid = task["uid"]
            if claims.setdefault(uid, slot) is _CANCELED:
                continue
            done((task, RUNNING, clock(), slot))
            fn = task["function"]
            if fn is not None:
                if not self._wake_pending:  # a long task shows RUNNING while it runs
                    self._wake_drain()
                state = _run_function(task, fn)
            else:
                try:  # RUNNING reaches the loop once the child runs past RUNNING_NOTICE
                    state = run_executable(task, exec_options(task),
                                           self._procs.register_for(uid),
                                           capture_dir(task, self._work_dir), wake)
                except Exception as exc:  # never lose a task to an unexpected error
                    state = record_failure(task, exc)
                if self._procs.was_killed(uid):
                    state = CANCELED
                    self._procs.forget(uid)
            done((task, state, clock(), slot))
            if fn is None:
                self._exec_ended()
            else:
                self._wake_drain()

    def _exec_ended(self) -> None:
        """From a worker, after appending an executable's outcome: wake the loop unless the
        drain ticks run and more tasks wait (a tick that stops re-checks the outcomes, so
        none is left)."""
        if not self._ticking or self._queue.empty():
            self._wake_drain(self._drain_and_tick)

    def _drain_and_tick(self) -> None:
        self._drain()
        if not self._ticking:
            self._ticking = True
            self._loop.call_later(_EXEC_TICK, self._tick)  # type: ignore[attr-defined]

    def _tick(self) -> None:
        if self._done:
            self._drain()
            self._loop.call_later(_EXEC_TICK, self._tick)  # type: ignore[attr-defined]
            return
        self._ticking = False  # then workers wake the loop again; one may have just
        if self._done:         # appended while it read _ticking as still True
            self._drain()

    def _started_in_pool(self, uid: str, t: float, pid: int) -> None:
        """Listener thread: a process-pool worker started ``uid`` (its result repeats it)."""
        task = self._live.get(uid)
        if task is not None:
            self.report(task, RUNNING, t, pid)

    # -- completion (event loop): the one drain, then feed the pool --------------------
    def _drained(self) -> None:
        feeder = self._feeder
        if feeder is not None:
            feeder.advance()  # suspects of a crashed worker run alone first
        if feeder is not None and feeder.pending and not self._pump_scheduled \
                and self.is_running and feeder.room() > 0:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    # -- process pool ------------------------------------------------------------------
    def _pump(self) -> None:
        """Hand queued function tasks to the process pool while it has room."""
        self._pump_scheduled = False
        feeder = self._feeder
        pending = feeder.pending
        claims = self._claims
        batch = []
        room = min(_PUMP_CHUNK, feeder.room())
        while pending and len(batch) < room and self.is_running:
            task = pending.popleft()
            if claims.setdefault(task["uid"], "pool") is not _CANCELED:
                batch.append(task)
        if batch:
            feeder.send(batch)
        if pending and self.is_running and feeder.room() > 0:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)


def _run_function(task: dict, fn: Any) -> str:
    try:
        value = fn(*task["args"], **task["kwargs"])
        if asyncio.iscoroutine(value):
            value = asyncio.run(value)
    except BaseException as exc:
        return record_failure(task, exc)
    task["return_value"] = value
    task["stdout"] = result_text(value)
    task["stderr"] = ""  # always a str once DONE (RHAPSODY's result contract)
    task["exit_code"] = 0
    return DONE
