"""Native function mode of the Dragon backend: a feeder thread, worker processes, a watcher.

Mixed into ``DragonExecutionBackend`` (which owns the attributes used here). The feeder
packs queued tasks into chunks (about ``_CHUNK_SECONDS`` of work each by a running estimate,
at most ``_CHUNK``), each function cloudpickled once, and queues them for the workers
(``_dragon_pool.ChunkWorkers``); the result thread records a chunk's outcomes and wakes the
loop once. Workers say which chunk they start, so the watcher can tell when a worker died
under a chunk: it reruns or fails that chunk and starts a new worker.
"""

from __future__ import annotations

import queue
import time
import traceback
from array import array
from collections import deque
from itertools import repeat
from operator import is_, itemgetter
from typing import Any

from ..api.backend import CANCELED_CLAIM, DONE_RUN, record_failure, result_text
from ..api.errors import BackendError, TaskExecutionError
from ..api.states import DONE, FAILED, RUNNING

__all__ = ["NativePoolMixin"]

_PLAIN = frozenset((type(None), bool, int, float, str, bytes))  # values restore() keeps

_CANCELED = CANCELED_CLAIM  # the engine's claim marker (api.backend)
_NO_FN = object()  # no function looked up yet in this batch
_NO_KWARGS: dict = {}  # shared empty kwargs of the items sent to the pool (never mutated)
_POPLEFT = deque.popleft
_UID, _FUNCTION = itemgetter("uid"), itemgetter("function")
_ARGS, _KWARGS = itemgetter("args"), itemgetter("kwargs")
_CHUNK = 1024          # most native tasks in one chunk, unless tiny (see _feed)
_CHUNK_MAX = 16384     # most tiny tasks in one chunk
_CHUNK_SECONDS = 0.05  # aim for chunks of about this much work once task times are known


class NativePoolMixin:
    """The native-function path; see the module docstring."""

    # -- native functions: feeder thread -> worker processes -> result thread -------------
    def _fid(self, fn: Any) -> tuple[int, bytes]:
        """``(id, cloudpickled blob)`` of a function, pickled once per function."""
        with self._fid_lock:
            fid = self._fid_locked(fn)
            return fid, self._blobs[fid]

    def _fid_locked(self, fn: Any) -> int:
        try:
            key: Any = fn
            hash(fn)
        except TypeError:
            key = ("id", id(fn))
        fid = self._fids.get(key)
        if fid is None:
            import cloudpickle
            blob = cloudpickle.dumps(fn)
            if len(self._fids) >= 1024:  # e.g. a new lambda per task: do not grow forever
                self._fids.clear()
                self._blobs.clear()
            # ids never repeat: workers cache functions by (backend token, id)
            fid = self._next_fid = self._next_fid + 1
            self._blobs[fid] = blob
            self._fids[key] = fid
        return fid

    def _feed(self) -> None:
        """Feeder thread: queued lists of tasks (a submit's natives) -> chunks -> workers."""
        get, get_nowait = self._native_q.get, self._native_q.get_nowait
        pending: deque = deque()
        stop = False
        share = _CHUNK  # tiny tasks: the backlog split evenly over the workers
        while pending or not stop:
            grew = False
            if not pending:
                item = get()
                if item is None:
                    return
                pending.extend(item)
                grew = True
            self._inflight.acquire()
            while not stop:  # take what else is queued meanwhile, without blocking
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                else:
                    pending.extend(item)
                    grew = True
            if not pending:  # an empty hand-over
                self._inflight.release()
                continue
            # a chunk holds what is queued, up to about _CHUNK_SECONDS of work (by the
            # running estimate), so long tasks stay balanced between the workers; tiny
            # tasks go as one chunk per worker of the backlog (fewer messages: each one
            # waits for a Dragon process to wake, which takes milliseconds on a busy node)
            size = min(_CHUNK, max(1, int(_CHUNK_SECONDS / self._task_seconds)))
            if size == _CHUNK:
                if grew:
                    share = min(_CHUNK_MAX, max(_CHUNK, -(-len(pending) // self._workers)))
                size = share
            batch = list(map(_POPLEFT, repeat(pending, min(size, len(pending)))))
            tasks, blobs, items = self._uniform_chunk(batch) or self._chunk_items(batch)
            if not tasks or self._workers_set is None:
                self._inflight.release()
                self._wake_drain()
                continue
            self._send(tasks, blobs, items, permit=True)

    def _uniform_chunk(self, batch: list) -> tuple[list, dict, list] | None:
        """A chunk of one function without arguments (null tasks, sweeps of a closure): one
        item shared by every task, so pickle sends it once. None if that is not the case."""
        fn = batch[0]["function"]
        try:
            if any(map(len, map(_ARGS, batch))) or any(map(_KWARGS, batch)) or \
                    not all(map(is_, map(_FUNCTION, batch), repeat(fn))):
                return None
        except TypeError:  # arguments without a length: the one-by-one path copies them
            return None
        claims = self._claims
        if _CANCELED in map(claims.setdefault, map(_UID, batch), repeat("pool")):
            return None  # some were canceled meanwhile: the one-by-one path skips them
        try:
            fid, blob = self._fid(fn)
        except Exception:
            return None  # the one-by-one path fails these tasks with the reason
        return batch, {fid: blob}, [(fid, (), _NO_KWARGS)] * len(batch)

    def _chunk_items(self, batch: list) -> tuple[list, dict, list]:
        """Tasks still to run of ``batch``, their functions' blobs and the pool's items."""
        claims = self._claims
        tasks, items, blobs = [], [], {}
        last_fn: Any = _NO_FN
        fid = 0
        for task in batch:
            if claims.setdefault(task["uid"], "pool") is _CANCELED:
                continue
            fn = task["function"]
            if fn is not last_fn:  # a batch is mostly one function: look it up once
                try:
                    fid, blob = self._fid(fn)
                except Exception as exc:
                    self._done.append((task, record_failure(task, exc), time.time(), None))
                    last_fn = _NO_FN
                    continue
                blobs[fid] = blob
                last_fn = fn
            tasks.append(task)
            args, kwargs = task["args"], task["kwargs"]
            # copies, so later edits of the task never change what runs; empty ones
            # are shared (pickle then sends them once per chunk)
            items.append((fid, args if args.__class__ is tuple else tuple(args),
                          dict(kwargs) if kwargs else _NO_KWARGS))
        return tasks, blobs, items

    def _send(self, tasks: list, blobs: dict, items: list, permit: bool) -> None:
        with self._fid_lock:
            self._next_chunk += 1
            cid = self._next_chunk
        self._chunks[cid] = (tasks, permit, blobs, items)
        try:
            self._workers_set.submit(cid, self._token, blobs, items)
        except Exception as exc:
            self._chunk_failed(cid, exc)

    def _take(self, cid: int) -> list | None:
        """The tasks of chunk ``cid`` (once: later callbacks see None); frees its permit."""
        with self._fid_lock:
            entry = self._chunks.pop(cid, None)
            if self._announced:
                self._announced.discard(cid)
        if entry is None:
            return None
        if entry[1]:
            self._inflight.release()
        return entry[0]

    def _watch(self) -> None:
        """Rerun or fail the chunk of a worker that died, and start a new worker. Workers
        say which chunk they start (``ChunkWorkers.take_starts``)."""
        workers = self._workers_set
        started: dict[int, int] = {}  # chunk id -> worker index
        # a few checks a second (the dispatching threads keep the GIL); close wakes it
        while not self._stopped.wait(0.3):
            for cid, index, t in workers.take_starts():
                started[cid] = index
                self._announce(cid, t, workers.pid(index))
            for cid in [c for c in started if c not in self._chunks]:
                del started[cid]  # its outcomes arrived
            for index in workers.dead():
                pid = workers.pid(index)
                for cid in [c for c, i in started.items() if i == index]:
                    del started[cid]
                    entry = self._chunks.get(cid)
                    if entry is not None and len(entry[0]) > 1 and not self._stopped.is_set():
                        # which task killed it is unknown: rerun each alone, so only the
                        # culprit fails (tasks of that chunk may run twice)
                        if self._take(cid) is None:
                            continue  # its results arrived meanwhile: nothing to rerun
                        _tasks, _permit, blobs, items = entry
                        for task, item in zip(_tasks, items, strict=True):
                            self._send([task], {item[0]: blobs[item[0]]}, [item], False)
                        continue
                    self._chunk_failed(cid, BackendError(
                        self._name, f"pool worker process {pid} died (killed, crashed or "
                        "out of memory) while running this task"), lost=True)
                workers.respawn(index)

    def _announce(self, cid: int, t: float, pid: int | None) -> None:
        """Watcher: a chunk of one task started (a long task): show it RUNNING now; its
        result then brings no second start. Bigger chunks' tasks start with their results."""
        with self._fid_lock:
            entry = self._chunks.get(cid)
            if entry is not None and len(entry[0]) == 1:
                self._announced.add(cid)
                self.report(entry[0][0], RUNNING, t, pid)

    def _chunk_done(self, cid: int, result: tuple) -> None:
        """Result thread: record a chunk's outcomes, wake the loop once."""
        from ._dragon_worker import restore
        announced = cid in self._announced  # (read before _take forgets it)
        tasks = self._take(cid)
        if tasks is None:
            return
        pid, outs = result
        self.seen_pids.add(pid)
        if outs.__class__ is tuple:  # every task returned None: start and end times
            starts, ends = array("d"), array("d")
            starts.frombytes(outs[0])
            ends.frombytes(outs[1])
            if ends:
                self._learn(ends[-1] - starts[0], len(ends))
            self._null_chunk_done(tasks, starts.tolist(), ends.tolist(), pid)
            return
        if len(outs) != len(tasks):
            self._fail_short_chunk(tasks, len(outs), pid)
            return
        if outs:
            self._learn(outs[-1][2] - outs[0][1], len(outs))
        done = self._done.append
        for task, (ok, t0, t1, value, tb) in zip(tasks, outs, strict=True):
            if not announced:
                done((task, RUNNING, t0, pid))
            if ok and value.__class__ not in _PLAIN:
                try:
                    value = restore(value)
                except Exception as exc:
                    ok, value, tb = False, exc, "".join(traceback.format_exception(exc))
            if ok:
                task["return_value"] = value
                task["stdout"] = "None" if value is None else result_text(value)
                task["stderr"] = ""
                task["exit_code"] = 0
                done((task, DONE, t1, pid))
            else:
                task["exception"] = value if isinstance(value, Exception) else \
                    TaskExecutionError(task["uid"], repr(value), 1)
                task["stderr"] = tb or repr(value)
                task["exit_code"] = 1
                done((task, FAILED, t1, pid))
        self._wake_drain()

    def _learn(self, seconds: float, n: int) -> None:
        """Update the running estimate of one task's time from a chunk's span."""
        per_task = max(1e-6, seconds / n)
        est = self._task_seconds
        # smooth small changes; follow a change of more than 4x at once (the first
        # chunks of null tasks would otherwise stay tiny for a dozen round trips)
        self._task_seconds = per_task if not est / 4 < per_task < est * 4 \
            else 0.5 * est + 0.5 * per_task

    def _null_chunk_done(self, tasks: list, starts: list, ends: list, pid: int) -> None:
        """Every task of a chunk returned None (null tasks, side effects): record them at
        once (the lengths must match, or the chunk fails: never a task left behind)."""
        if not len(starts) == len(ends) == len(tasks):
            self._fail_short_chunk(tasks, min(len(starts), len(ends)), pid)
            return
        for field, value in (("return_value", None), ("stdout", "None"), ("stderr", ""),
                             ("exit_code", 0)):
            for task in tasks:
                task[field] = value
        self._done.append((tasks, DONE_RUN, (starts, ends), pid))  # one record, whole
        self._wake_drain()

    def _fail_short_chunk(self, tasks: list, n: int, pid: int) -> None:
        """A worker returned ``n`` outcomes for a chunk of another length: fail the chunk
        (which outcome is whose is unknown; never a task left without one)."""
        now = time.time()
        err = BackendError(self._name, f"a pool worker returned {n} outcomes for "
                           f"{len(tasks)} tasks")
        self._done.extend((task, record_failure(task, err), now, pid) for task in tasks)
        self._wake_drain()

    def _chunk_failed(self, cid: int, exc: BaseException, lost: bool = False) -> None:
        tasks = self._take(cid)
        if tasks is None:
            return
        if not isinstance(exc, Exception):
            exc = RuntimeError(repr(exc))
        now = time.time()
        for task in tasks:
            if lost:
                err = exc
            else:
                err = BackendError(self._name, f"the Dragon pool could not run task "
                                   f"{task['uid']}: {exc}")
                err.__cause__ = exc
            self._done.append((task, record_failure(task, err), now, None))
        self._wake_drain()

