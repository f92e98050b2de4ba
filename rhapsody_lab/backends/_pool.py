"""Feeding a ``ProcessPoolExecutor``: batches when the backlog is deep, bounded in flight.

Function tasks wait in a deque until the pool has room; a deep backlog is sent in batches
(one pool work item, one pickle round trip, one future for several tasks), a shallow one
task by task, so a lone task still gets the lowest latency. Tasks in the pool are
bounded, so a worker process that dies (which fails everything the pool holds) touches
few tasks.

Which task killed it cannot be told from a broken pool: every future in flight fails
alike. So the tasks it held become *suspects*: new work waits, and each suspect runs
alone in a fresh pool, one after the other. A suspect that breaks the pool while alone is
the culprit and fails (with its worker's exit code or signal); the others finish as if
nothing happened. Each task runs alone at most once, so a culprit fails on its second
crash and nothing loops. Tasks that had not reached the pool when it broke (it can break
between two batches of one ``send``) are not suspects: they wait again, first in line, for
its replacement.
"""

from __future__ import annotations

import functools
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..api.backend import DONE_RUN, record_failure, result_text
from ..api.errors import BackendError
from ..api.states import DONE, FAILED, RUNNING
from ._exits import describe_exit
from ._proc_worker import call_batch

__all__ = ["PoolFeeder"]

_MAX_BATCH = 32


class PoolFeeder:
    """Owns the pending deque and the in-flight bookkeeping of one process pool.

    ``report(task, state, time, slot)`` and ``wake()`` may be called from any thread;
    ``wake`` must make the loop call ``advance()`` soon (the backend's drain does).
    """

    def __init__(self, executor: ProcessPoolExecutor, workers: int, name: str,
                 report: Callable[[Any, str, Any, Any], None], wake: Callable[[], None]):
        self.executor = executor
        self.workers = workers
        self.name = name
        self._report = report      # thread-safe: (task, state, end time, slot)
        self._wake = wake
        self.pending: deque = deque()
        self.inflight = 0
        self.max_inflight = max(64, 16 * workers)
        self._futures: set[Any] = set()
        self._blobs: dict[Any, bytes] = {}
        # pool threads' done callbacks and the loop both touch these: one lock
        self._lock = threading.Lock()
        self._suspects: deque = deque()  # lost with a broken pool; each runs alone next
        self._alone = False  # a suspect is in the pool, and nothing else is
        self.closing = False
        self.starts: str | None = None  # a StartListener's address: workers say who starts

    def blob(self, fn: Any) -> bytes:
        """``fn`` cloudpickled once per distinct function."""
        try:
            key: Any = fn
            blob = self._blobs.get(key)
        except TypeError:  # unhashable callable
            key = id(fn)
            blob = self._blobs.get(key)
        if blob is None:
            import cloudpickle
            blob = cloudpickle.dumps(fn)
            if len(self._blobs) > 1024:
                self._blobs.clear()
            self._blobs[key] = blob
        return blob

    def room(self) -> int:
        """Tasks ``send`` may take now; none while suspects of a crash are run alone."""
        if self._suspects or self._alone:
            return 0
        return self.max_inflight - self.inflight

    def send(self, tasks: list[dict]) -> None:
        """Submit ``tasks`` (already claimed) to the pool in batches sized to the backlog."""
        if getattr(self.executor, "_broken", False):
            self._replace()
        backlog = len(tasks) + len(self.pending)
        size = max(1, min(_MAX_BATCH, backlog // (4 * self.workers)))
        for i in range(0, len(tasks), size):
            batch = tasks[i:i + size]
            try:
                items = [(self.blob(t["function"]), t["args"], t["kwargs"]) for t in batch]
                fut = self.executor.submit(call_batch, items, [t["uid"] for t in batch],
                                           self.starts)
            except BrokenProcessPool:
                # a worker died since this call began: the rest never reached the pool,
                # so they wait again (first in line); the pump that called us sends them
                # on (the next send replaces the pool) once there is room
                self.pending.extendleft(reversed(tasks[i:]))
                return
            except Exception as exc:  # e.g. an unpicklable function: fail these tasks only
                if len(batch) > 1:
                    for t in batch:
                        self.send([t])
                    continue
                self._fail(batch[0], exc)
                continue
            with self._lock:
                self.inflight += len(batch)
                self._futures.add(fut)
            fut.add_done_callback(functools.partial(self._done, batch, self.executor, False))

    def advance(self) -> None:
        """On the loop: once the pool is empty, run the next suspect alone in it."""
        while True:
            with self._lock:
                if self.closing or self._alone or self.inflight or not self._suspects:
                    return
                task = self._suspects.popleft()
                self._alone = True
                self.inflight += 1
            if getattr(self.executor, "_broken", False):
                self._replace()
            executor = self.executor
            try:
                fut = executor.submit(call_batch, [(self.blob(task["function"]), task["args"],
                                                    task["kwargs"])], [task["uid"]], self.starts)
            except Exception as exc:  # it was sent once, so this is unexpected: fail it alone
                with self._lock:
                    self._alone = False
                    self.inflight -= 1
                self._fail(task, exc)
                continue
            with self._lock:
                self._futures.add(fut)
            fut.add_done_callback(functools.partial(self._done, [task], executor, True))
            return

    def _fail(self, task: dict, exc: BaseException) -> None:
        self._report(task, record_failure(task, exc), time.time(), None)

    def _replace(self) -> None:
        """Swap a broken pool for a new one of the same size and start method."""
        old = self.executor
        ctx = getattr(old, "_mp_context", None)
        self.executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        old.shutdown(wait=False, cancel_futures=True)

    def _done(self, batch: list[dict], executor: ProcessPoolExecutor, alone: bool,
              fut: Any) -> None:
        """On the pool's manager thread: turn outcomes into task fields, report them.

        ``alone``: ``batch`` is one suspect that was the only work in ``executor``.
        """
        with self._lock:
            self._futures.discard(fut)
            self.inflight -= len(batch)
            if alone:
                self._alone = False
        if fut.cancelled() or self.closing:
            return  # shutting down: these tasks become CANCELED, not FAILED
        exc = fut.exception()
        if exc is None:
            pid, outcomes = fut.result()
            if all(o[0] for o in outcomes) and len(outcomes) == len(batch):
                for task, (_, _, _, payload) in zip(batch, outcomes, strict=True):
                    value = pickle.loads(payload)
                    task["return_value"] = value
                    task["stdout"] = result_text(value)
                    task["stderr"] = ""
                    task["exit_code"] = 0
                starts, ends = [o[1] for o in outcomes], [o[2] for o in outcomes]
                self._report(batch, DONE_RUN, (starts, ends), pid)  # one record, whole
                return
            for task, (ok, start, end, payload) in zip(batch, outcomes, strict=True):
                self._report(task, RUNNING, start, pid)
                if ok:
                    value = pickle.loads(payload)
                    task["return_value"] = value
                    task["stdout"] = result_text(value)
                    task["stderr"] = ""
                    task["exit_code"] = 0
                    self._report(task, DONE, end, pid)
                else:
                    self._report_raised(task, payload, end, pid)
            return
        if isinstance(exc, CancelledError):
            return
        if not isinstance(exc, BrokenProcessPool):
            for task in batch:
                self._fail(task, exc)
            return
        if alone:
            self._fail_culprit(batch[0], executor)
            return
        with self._lock:  # innocent until run alone: no retry spent, no failure
            self._suspects.extend(batch)
        self._wake()

    def _fail_culprit(self, task: dict, executor: ProcessPoolExecutor) -> None:
        """``task`` broke the pool while alone in it: it, and only it, fails."""
        # The dead worker is the one with an exit code: the pool terminates the others
        # (SIGTERM) only after it has failed its futures, which runs this callback, unless
        # the task died before the callback was added (then it runs late, on the loop).
        # The dead one's pipes close a moment before it can be reaped: give it a little time.
        procs = list((getattr(executor, "_processes", None) or {}).values())
        # A worker the pool terminated may be reaped first: wait for a code other than
        # SIGTERM until every worker has ended (then SIGTERM was the dead one's own).
        codes: set = set()
        deadline = time.monotonic() + 1.0
        while procs and time.monotonic() < deadline:
            ended = [p.exitcode for p in procs]
            codes = set(ended) - {None}
            if codes - {-signal.SIGTERM} or None not in ended:
                break
            time.sleep(0.005)
        own = codes - {-signal.SIGTERM}
        code = own.pop() if len(own) == 1 else None if own or not codes else -signal.SIGTERM
        uid = task["uid"]
        exc = BackendError(self.name, f"the worker process died ({describe_exit(code)}) "
                           f"while task {uid} ran alone in the pool: the task crashed it "
                           "(os._exit, a signal, a fault) or it was killed (e.g. out of "
                           "memory); the tasks lost with it earlier were run again")
        task["exception"] = exc
        task["stderr"] = str(exc)
        task["exit_code"] = code if code is not None else 1
        self._report(task, FAILED, time.time(), None)

    def _report_raised(self, task: dict, payload: tuple, end: float, pid: int) -> None:
        blob, text = payload
        exc: BaseException
        if blob is not None:
            exc = pickle.loads(blob)
        else:
            exc = RuntimeError(f"the task raised an exception that cannot be pickled; "
                               f"its traceback:\n{text}")
        if not isinstance(exc, Exception):
            from ..api.errors import TaskExecutionError
            exc = TaskExecutionError(task["uid"], repr(exc), 1)
        task["exception"] = exc
        task["stderr"] = text
        task["exit_code"] = 1
        self._report(task, FAILED, end, pid)

    def cancel_all(self) -> None:
        self.closing = True
        for fut in list(self._futures):
            fut.cancel()
