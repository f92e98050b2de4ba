"""ConcurrentExecutionBackend: a thread or process pool on the local machine.

Where time goes matters here (see ANCHORS.md): the event loop never creates one asyncio
task or one ``concurrent.futures.Future`` per thread task. Worker threads pull tasks from
one queue, record each start (a RUNNING event) and outcome ``(task, state, time, slot)``
in two deques and wake the loop at most once per batch; the loop's drain emits the starts
at once (one run for an observer that takes runs) and finishes the batch.
Process-pool functions are shipped with cloudpickle once per distinct function, and
executables always run from driver threads (a subprocess needs no worker process).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from ..api.backend import CANCELED_CLAIM, BaseBackend, result_text, take_outcomes
from ..api.errors import SessionError, TaskExecutionError
from ..api.states import CANCELED, DONE, FAILED, RUNNING
from ._pool import RETRY, PoolFeeder
from ._subprocess import ProcessTable, exec_options, run_executable

__all__ = ["ConcurrentExecutionBackend"]

_CANCELED = CANCELED_CLAIM  # the engine's claim marker (api.backend)
_DRAIN_BUDGET = 2_000  # completions finished per loop callback (keeps the loop responsive)
_DRAIN_SECONDS = 0.004
_DRAIN_STEP = 256      # outcomes taken from the deque at once (then the clock is read)
_PUMP_CHUNK = 512      # process-pool tasks handed over per loop callback


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
        self._done: deque = deque()
        self._started: deque = deque()  # RUNNING events, emitted by the drain in one go
        self._threads: list[threading.Thread] = []
        self._procs = ProcessTable()
        self._pump_scheduled = False
        self._feeder = PoolFeeder(executor, self._workers, self._name, lambda: self.emit,
                                  self._report) if self._processes else None

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
        self._procs.kill_all()
        for _ in range(self._workers):
            self._queue.put(None)
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
        self._drain()  # deliver what already finished before the rest become CANCELED

    # -- submission --------------------------------------------------------------------
    def check_task(self, task: dict) -> None:
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
        name = self._name
        done = self._done.append
        started = self._started.append
        clock = time.time
        while True:
            task = get()
            if task is None:
                return
            uid = task["uid"]
            if claims.setdefault(uid, slot) is _CANCELED:
                continue
            started((clock(), uid, RUNNING, name, slot))
            if not self._wake_pending:  # the drain emits it: a long task shows RUNNING
                self._wake_drain()
            if self._callbacks:
                done((task, RUNNING, 0.0, slot))
            fn = task["function"]
            if fn is not None:
                state = _run_function(task, fn)
            else:
                try:
                    state = run_executable(task, exec_options(task),
                                           self._procs.register_for(uid))
                except Exception as exc:  # never lose a task to an unexpected error
                    state = _record_failure(task, exc)
                if self._procs.was_killed(uid):
                    state = CANCELED
                    self._procs.forget(uid)
            done((task, state, clock(), slot))
            self._wake_drain()

    # -- completion (event loop) -------------------------------------------------------
    def _drain(self) -> None:
        self._wake_pending = False
        done = self._done
        finish = self._finish
        claims = self._claims
        n = 0
        deadline = time.perf_counter() + _DRAIN_SECONDS
        started = self._started
        while (done or started) and n < _DRAIN_BUDGET and time.perf_counter() < deadline:
            entries = take_outcomes(done, _DRAIN_STEP)
            if started:  # after taking outcomes: their tasks' RUNNING events are in it
                self.emit_events(take_outcomes(started, len(started)))
            if not entries:
                break
            n += len(entries)
            if self._finish_outcomes(entries):  # the bulk of a busy run: all DONE
                continue
            for task, state, t, slot in entries:
                if state is RUNNING:
                    self._notify(task, RUNNING)
                    continue
                claims.pop(task["uid"], None)
                if state is RETRY:
                    self._feeder.pending.appendleft(task)
                    continue
                finish(task, state, t, slot)
        if self._feeder is not None and self._feeder.pending and not self._pump_scheduled \
                and self.is_running and self._feeder.room() > 0:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)
        if done:
            self._drain_again()
        if self._wake_session is not None:
            self._wake_session()

    # -- process pool ------------------------------------------------------------------
    def _report(self, task: dict, state: str, t: float, slot: Any) -> None:
        """Record an outcome from any thread and wake the loop (at most once per batch)."""
        self._done.append((task, state, t, slot))
        self._wake_drain()

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
        return _record_failure(task, exc)
    task["return_value"] = value
    task["stdout"] = result_text(value)
    task["exit_code"] = 0
    return DONE


def _record_failure(task: dict, exc: BaseException) -> str:
    task["exception"] = exc
    cause = exc.__cause__
    remote = getattr(cause, "tb", None)  # a process pool's remote traceback text
    if isinstance(remote, str):
        task["stderr"] = remote
    else:
        task["stderr"] = "".join(traceback.format_exception(exc))
    task["exit_code"] = 1
    if not isinstance(exc, Exception):  # SystemExit & co. must not escape an await
        task["exception"] = TaskExecutionError(task["uid"], repr(exc), 1)
    return FAILED
