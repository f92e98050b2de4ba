"""Feeding a ``ProcessPoolExecutor``: batches when the backlog is deep, bounded in flight.

Function tasks wait in a deque until the pool has room; a deep backlog is sent in batches
(one pool work item, one pickle round trip, one future for several tasks), a shallow one
task by task, so a lone task still gets the lowest latency. Tasks in the pool are
bounded, so a worker process that dies (which fails everything the pool holds) touches
few tasks; those are retried once on a fresh pool.
"""

from __future__ import annotations

import functools
import pickle
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..api.backend import DONE_RUN, record_failure, result_text
from ..api.errors import BackendError
from ..api.states import DONE, FAILED, RUNNING
from ._proc_worker import call_batch

__all__ = ["RETRY", "PoolFeeder"]

RETRY = "RETRY"  # pseudo-state: the task was lost with a worker process; run it again
_MAX_BATCH = 32


class PoolFeeder:
    """Owns the pending deque and the in-flight bookkeeping of one process pool."""

    def __init__(self, executor: ProcessPoolExecutor, workers: int, name: str,
                 report: Callable[[dict, str, float, Any], None]):
        self.executor = executor
        self.workers = workers
        self.name = name
        self._report = report      # thread-safe: (task, state, end time, slot)
        self.pending: deque = deque()
        self.inflight = 0
        self.max_inflight = max(64, 16 * workers)
        self._futures: set[Any] = set()
        self._blobs: dict[Any, bytes] = {}
        self._retried: set[str] = set()
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
            except Exception as exc:  # e.g. an unpicklable function: fail these tasks only
                if len(batch) > 1:
                    for t in batch:
                        self.send([t])
                    continue
                self._fail(batch[0], exc)
                continue
            self.inflight += len(batch)
            self._futures.add(fut)
            fut.add_done_callback(functools.partial(self._done, batch))

    def _fail(self, task: dict, exc: BaseException) -> None:
        self._report(task, record_failure(task, exc), time.time(), None)

    def _replace(self) -> None:
        """Swap a broken pool for a new one of the same size and start method."""
        old = self.executor
        ctx = getattr(old, "_mp_context", None)
        self.executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        old.shutdown(wait=False, cancel_futures=True)

    def _done(self, batch: list[dict], fut: Any) -> None:
        """On the pool's manager thread: turn outcomes into task fields, report them."""
        self._futures.discard(fut)
        self.inflight -= len(batch)
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
                    task["exit_code"] = 0
                    self._report(task, DONE, end, pid)
                else:
                    self._report_raised(task, payload, end, pid)
            return
        if isinstance(exc, CancelledError):
            return
        for task in batch:
            uid = task["uid"]
            if isinstance(exc, BrokenProcessPool):
                if uid not in self._retried:
                    self._retried.add(uid)
                    self._report(task, RETRY, time.time(), None)
                    continue
                exc = BackendError(self.name, f"a worker process died twice while task {uid} "
                                   "was in the pool (killed, crashed or out of memory); it "
                                   "was not retried again")
            self._fail(task, exc)

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
