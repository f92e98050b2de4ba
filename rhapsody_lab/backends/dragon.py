"""DragonExecutionBackendV3: the five execution modes of RHAPSODY on a Dragon runtime.

Mode by ``task_backend_specific_kwargs`` (see ``_dragon_spec``): a function with no
template runs *native*, on a Dragon ``multiprocessing`` Pool (measured here: chunked
``apply_async`` ~100k tasks/s, against ~2 tasks/s for Dragon's ``Batch``); a
``process_template`` runs the function or executable in one Dragon process,
``process_templates`` / ``type="mpi"`` + ``ranks`` as a job of several processes
(``_dragon_procs``). A function with only ``timeout`` runs in its own process, so the
timeout can end it.

Nothing here blocks the event loop: a feeder thread packs native tasks into chunks (at
most a few chunks in flight per worker, so chunks grow with the backlog), the pool's result
thread and the launcher threads append completions to one deque and wake the loop once
per batch, and the loop finishes them. A watcher thread hears which pool worker started
which chunk; if that worker dies (the pool restarts it but drops its job) the chunk's tasks
rerun one by one, so only the task that kills its worker fails. Scripts must run under
``dragon -s script.py``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import queue
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..api.backend import BaseBackend
from ..api.errors import BackendError, SessionError, TaskExecutionError
from ..api.states import CANCELED, DONE, FAILED, RUNNING
from ._dragon_spec import NodeInfo, plan

__all__ = ["DragonExecutionBackend", "DragonExecutionBackendV3"]

_CANCELED = object()
_DRAIN_BUDGET = 4_000
_CHUNK = 1024        # most native tasks in one pool call
_CHUNK_SECONDS = 0.05  # aim for chunks of about this much work once task times are known
_MAX_LAUNCHERS = 64   # process/job tasks starting or running at once

_NOT_UNDER_DRAGON = (
    "no Dragon runtime in this process; start the script with `dragon -s script.py` "
    "(single node) or `dragon script.py` inside an allocation, not with `python`")


class DragonExecutionBackendV3(BaseBackend):
    """Runs function and executable tasks on the Dragon runtime this script runs in.

    ``num_workers`` sizes the native-function pool (default: every CPU of the runtime's
    nodes). ``batch_kwargs`` is accepted for compatibility with rhapsody-py 0.6.0 (its
    ``num_workers`` key is honoured, the rest ignored).
    """

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
        self._pool: Any = None
        self._token = uuid.uuid4().hex
        self._native_q: queue.SimpleQueue = queue.SimpleQueue()
        self._feeder: threading.Thread | None = None
        self._inflight: threading.Semaphore | None = None
        self._task_seconds = 0.01  # running estimate of one native task's run time
        self._claims: dict[str, Any] = {}
        self._fids: dict[Any, int] = {}
        self._blobs: dict[int, bytes] = {}
        self._fid_lock = threading.Lock()
        self._chunks: dict[int, tuple] = {}  # chunk id -> (tasks, permit, blobs, items)
        self._next_chunk = 0
        self._startq: Any = None
        self._watcher: threading.Thread | None = None
        self._stopping = False
        self._next_fid = 0
        self._done: deque = deque()
        self._wake_pending = False
        self._launcher: ThreadPoolExecutor | None = None
        self._ranks: dict[str, Any] = {}
        self.startup_seconds: float | None = None
        self.seen_pids: set[int] = set()  # pool worker pids seen (for leak checks)

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
        import multiprocessing as mp

        from dragon.native.machine import Node, System
        nodes = []
        for h in System().nodes:
            node = Node(h)
            nodes.append(NodeInfo(node.hostname, node.h_uid, frozenset(node.cpus or ()),
                                  frozenset(node.gpus or ())))
        self._nodes = nodes
        if self._workers is None:
            self._workers = max(1, sum(len(n.cpus) for n in nodes))
        from ._dragon_worker import init_worker
        ctx = mp.get_context("dragon")
        self._startq = ctx.Queue()
        self._pool = ctx.Pool(self._workers, initializer=init_worker, initargs=(self._startq,))

    async def _stop(self) -> None:
        for uid in list(self._live):
            self._claims.setdefault(uid, _CANCELED)
        self._native_q.put(None)
        self._stopping = True
        ranks = list(self._ranks.values())
        pool, self._pool = self._pool, None

        def stop_all() -> None:
            threads = [threading.Thread(target=r.kill, daemon=True) for r in ranks]
            for t in threads:
                t.start()
            if pool is not None:
                try:
                    pool.terminate()
                    pool.join()
                except Exception:
                    pass
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
        plans = [plan(t, self._nodes) if (t.get("task_backend_specific_kwargs")
                                          or t.get("function") is None) else None
                 for t in tasks]  # validate all before accepting any
        self._accept(tasks)
        put = self._native_q.put
        for task, p in zip(tasks, plans, strict=True):
            if p is None:
                put(task)
            else:
                self._launcher.submit(self._run_procs, task, p)

    async def cancel_task(self, uid: str) -> bool:
        task = self._live.get(uid)
        if task is None:
            return False
        if self._claims.setdefault(uid, _CANCELED) is _CANCELED:
            self._finish(task, CANCELED, time.time(), reason="canceled before it started")
            return True
        ranks = self._ranks.get(uid)
        if ranks is not None:
            threading.Thread(target=ranks.kill, daemon=True).start()
            return True  # the launcher reports CANCELED once the processes are gone
        return False  # a function running in a pool worker cannot be interrupted safely

    # -- native functions: feeder thread -> Dragon pool -> result thread -----------------
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
        get, get_nowait = self._native_q.get, self._native_q.get_nowait
        claims = self._claims
        stop = False
        while not stop:
            first = get()
            if first is None:
                return
            self._inflight.acquire()
            batch = [first]
            # a chunk holds what is queued, up to about _CHUNK_SECONDS of work (by the
            # running estimate), so long tasks stay balanced between the workers
            size = min(_CHUNK, max(1, int(_CHUNK_SECONDS / self._task_seconds)))
            while len(batch) < size:
                try:
                    t = get_nowait()
                except queue.Empty:
                    break
                if t is None:
                    stop = True
                    break
                batch.append(t)
            tasks, items, blobs = [], [], {}
            for task in batch:
                if claims.setdefault(task["uid"], "pool") is _CANCELED:
                    continue
                try:
                    fid, blob = self._fid(task["function"])
                except Exception as exc:
                    self._done.append((task, _record_failure(task, exc), time.time(), None))
                    continue
                blobs[fid] = blob
                tasks.append(task)
                items.append((fid, tuple(task["args"]), dict(task["kwargs"])))
            if not tasks or self._pool is None:
                self._inflight.release()
                self._wake_if_needed()
                continue
            self._send(tasks, blobs, items, permit=True)

    def _send(self, tasks: list, blobs: dict, items: list, permit: bool) -> None:
        from ._dragon_worker import run_chunk
        with self._fid_lock:
            self._next_chunk += 1
            cid = self._next_chunk
        self._chunks[cid] = (tasks, permit, blobs, items)
        try:
            self._pool.apply_async(
                run_chunk, (self._token, blobs, items, cid),
                callback=functools.partial(self._chunk_done, cid),
                error_callback=functools.partial(self._chunk_failed, cid))
        except Exception as exc:
            self._chunk_failed(cid, exc)

    def _take(self, cid: int) -> list | None:
        """The tasks of chunk ``cid`` (once: later callbacks see None); frees its permit."""
        entry = self._chunks.pop(cid, None)
        if entry is None:
            return None
        if entry[1]:
            self._inflight.release()
        return entry[0]

    def _watch(self) -> None:
        """Fail the chunk of a pool worker that died (the pool restarts the worker but
        drops its job). Workers report ``(chunk, pid, host)`` when they start a chunk."""
        import socket
        host = socket.gethostname()
        started: dict[int, tuple] = {}
        q = self._startq
        last = time.time()
        while not self._stopping:
            try:
                cid, pid, where = q.get(timeout=0.5)
                if cid in self._chunks:
                    started[cid] = (pid, where)
            except Exception:  # queue.Empty (or the runtime going away)
                pass
            if time.time() - last < 0.5:
                continue
            last = time.time()
            for cid, (pid, where) in list(started.items()):
                if cid not in self._chunks:
                    del started[cid]
                elif where == host and not _pid_alive(pid):
                    del started[cid]
                    entry = self._chunks.get(cid)
                    if entry is not None and len(entry[0]) > 1 and not self._stopping:
                        # which task killed it is unknown: rerun each alone, so only the
                        # culprit fails (tasks of that chunk may run twice)
                        self._take(cid)
                        _tasks, _permit, blobs, items = entry
                        for task, item in zip(_tasks, items, strict=True):
                            self._send([task], {item[0]: blobs[item[0]]}, [item], False)
                        continue
                    self._chunk_failed(cid, BackendError(
                        self._name, f"pool worker process {pid} died (killed, crashed or "
                        "out of memory) while running this task"), lost=True)

    def _chunk_done(self, cid: int, result: tuple) -> None:
        """Pool result thread: record a chunk's outcomes, wake the loop once."""
        from ._dragon_worker import restore
        tasks = self._take(cid)
        if tasks is None:
            return
        pid, outs = result
        self.seen_pids.add(pid)
        if outs:
            per_task = max(1e-6, (outs[-1][2] - outs[0][1]) / len(outs))
            self._task_seconds = 0.5 * self._task_seconds + 0.5 * per_task
        emit, name, done = self.emit, self._name, self._done.append
        for task, (ok, t0, t1, value, tb) in zip(tasks, outs, strict=True):
            emit((t0, task["uid"], RUNNING, name, pid))
            if ok:
                try:
                    value = restore(value)
                except Exception as exc:
                    ok, value, tb = False, exc, "".join(traceback.format_exception(exc))
            if ok:
                task["return_value"] = value
                task["stdout"] = _text(value)
                task["exit_code"] = 0
                done((task, DONE, t1, pid))
            else:
                task["exception"] = value if isinstance(value, Exception) else \
                    TaskExecutionError(task["uid"], repr(value), 1)
                task["stderr"] = tb or repr(value)
                task["exit_code"] = 1
                done((task, FAILED, t1, pid))
        self._wake_if_needed()

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
            self._done.append((task, _record_failure(task, err), now, None))
        self._wake_if_needed()

    # -- process and job modes: launcher threads ------------------------------------------
    def _run_procs(self, task: dict, p: Any) -> None:
        from ._dragon_procs import RankSet, run_plan
        uid = task["uid"]
        if self._claims.setdefault(uid, "proc") is _CANCELED:
            return
        ranks = RankSet()
        self._ranks[uid] = ranks
        slot: list = [None]

        def on_running(puid: Any) -> None:
            slot[0] = puid
            self.emit((time.time(), uid, RUNNING, self._name, puid))

        blob = None
        try:
            if task.get("function") is not None:
                blob = self._fid(task["function"])[1]
            state = run_plan(task, p, blob, ranks, on_running)
        except Exception as exc:  # never lose a task to an unexpected error
            threading.Thread(target=_end_quietly, args=(ranks,), daemon=True).start()
            state = _record_failure(task, exc)
        finally:
            self._ranks.pop(uid, None)
        if ranks.killed and state != CANCELED:
            state = CANCELED
        self._done.append((task, state, time.time(), slot[0]))
        self._wake_if_needed()

    # -- completion (event loop) -------------------------------------------------------
    def _wake_if_needed(self) -> None:
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # loop closed: nothing to deliver to
            pass

    def _drain(self) -> None:
        self._wake_pending = False
        done = self._done
        pop = done.popleft
        finish, claims = self._finish, self._claims
        n = 0
        while done and n < _DRAIN_BUDGET:
            task, state, t, slot = pop()
            n += 1
            claims.pop(task["uid"], None)
            finish(task, state, t, slot)
        if done:
            self._wake_pending = True
            self._loop.call_soon(self._drain)
        if self._wake_session is not None:
            self._wake_session()


DragonExecutionBackend = DragonExecutionBackendV3


def _end_quietly(ranks: Any) -> None:
    from ._dragon_procs import _end
    _end(list(ranks.procs))


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _record_failure(task: dict, exc: BaseException) -> str:
    task["exception"] = exc
    task["stderr"] = "".join(traceback.format_exception(exc))
    task["exit_code"] = 1
    return FAILED


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return object.__repr__(value)
