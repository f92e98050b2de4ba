"""The Dask backend's two threads: a submitter that hands tasks to Dask in bulk, and a
collector that gathers results in batches and reports them (never on the event loop).

Mixed into ``DaskExecutionBackend`` (which owns the attributes used here).
"""

from __future__ import annotations

import os
import queue
import sys
import time
import traceback

from ..api.backend import result_text
from ..api.errors import BackendError, TaskValidationError
from ..api.states import CANCELED, DONE, FAILED, RUNNING
from ._dask_chunks import collect_chunk
from ._dask_tasks import (
    _SAFE,
    _call,
    _dask_options,
    _map_options,
    _pickle_error,
    _plain,
    _plain_bytes,
    _retries,
    _run_exec,
)
from ._subprocess import capture_dir, exec_options

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
_CHUNK_ARG_BYTES = 64 * 2**10  # a task with larger arguments goes alone, never in a chunk
_RUNNING_POLL = 1.0       # seconds between two looks at what the workers hold


class DaskThreads:
    """Submitter and collector threads (see the module docstring)."""

    # -- submitter thread --------------------------------------------------------------
    def _submitter(self) -> None:
        get = self._submit_q.get
        feeder = self._chunks
        while True:
            wait = feeder.wait_time() if feeder is not None else None
            try:
                batch = get() if wait is None else get(timeout=wait)
            except queue.Empty:
                batch = []  # held tasks may be due: look at them
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
        feeder = self._chunks
        for (kind, opts), tasks in groups.items():
            if kind == "f":
                # Dask serialises on its I/O thread and only logs a failure there (the
                # futures would never finish): refuse unpicklable tasks here, one by one.
                sized = [(t, n) for t in tasks if (n := self._args_bytes(t)) is not None]
                tasks = [t for t, _ in sized]
                if feeder is not None:  # alone or in chunks, as the feeder decides
                    small = [t for t, n in sized if n <= _CHUNK_ARG_BYTES]
                    if small:
                        feeder.add(small, opts)
                    tasks = [t for t, n in sized if n > _CHUNK_ARG_BYTES]  # large: alone
                if not tasks:
                    continue
            self._map_tasks(kind, opts, tasks)
        if feeder is not None:
            feeder.release()

    def _next_key(self, name: str) -> str:
        """A Dask key ``<name>-<backend token>-<n>`` (see the backend's docstring)."""
        prefix = _SAFE.sub("_", name).strip("_") or "rhapsody"
        if not prefix[0].isalpha():
            prefix = "rhapsody_" + prefix
        self._seq += 1
        return f"{prefix}-{self._token}-{self._seq}"

    def _map_tasks(self, kind: str, opts: tuple, tasks: list) -> list:
        """Hand ``tasks`` to Dask, one Dask task each (one ``client.map``); the futures."""
        keys, payloads = [], []
        for task in tasks:
            if kind == "f":
                fn = task["function"]
                name = getattr(fn, "__name__", None) or "rhapsody"
                payloads.append((task["uid"], fn, task["args"] or (),
                                 task["kwargs"] or {}, _retries(task)))
            else:
                name = os.path.basename(str(task["executable"])) or "exec"
                payloads.append((task["uid"], task["executable"],
                                 [str(a) for a in task["arguments"] or ()],
                                 exec_options(task), capture_dir(task, self._work_dir)))
            keys.append(self._next_key(name))
        futs = self.client.map(_call if kind == "f" else _run_exec, payloads, key=keys,
                               pure=False, **_map_options(opts))
        self._track(tasks, futs)
        return futs

    def _args_bytes(self, task: dict) -> int | None:
        """About the pickled size of ``task``'s arguments; None (and the task failed) if
        its function or arguments cannot be pickled."""
        fn = task["function"]
        cache = self._pickle_ok
        field, err = "function", cache.get(id(fn), (None, None))[1]
        if id(fn) not in cache:
            err = _pickle_error(fn)[0]
            if len(cache) > 4096:
                cache.clear()
            cache[id(fn)] = (fn, err)  # holding fn keeps its id from being reused
        size = 0
        if err is None:
            if _plain(task["args"], task["kwargs"]):
                size = _plain_bytes(task["args"], task["kwargs"])
            else:
                field = "args"
                err, size = _pickle_error((task["args"], task["kwargs"]))
        if err is None:
            return size
        what = getattr(fn, "__qualname__", repr(fn)) if field == "function" else "its arguments"
        msg = (f"not sent to Dask: {what} cannot be pickled "
               f"({err}); define functions at module level (or in the notebook) and do not "
               "capture locks, open files, sockets or clients")
        self._report_failure(task, TaskValidationError(task["uid"], msg, field=field), msg)
        return None

    def _track(self, tasks: list, futs: list, chunks: bool = False) -> None:
        """Remember which task (``chunks``: which list of tasks) each future runs."""
        store = self._futs
        live = self._live
        orphans = []
        for task, fut in zip(tasks, futs, strict=True):
            if fut is None:
                continue
            fut._rhapsody_task = task
            members = task if chunks else (task,)
            for t in members:
                store[t["uid"]] = fut
            if not any(t["uid"] in live for t in members):  # canceled while submitting
                for t in members:
                    store.pop(t["uid"], None)
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
                    task = fut._rhapsody_task
                    for one in task if task.__class__ is list else (task,):  # a chunk
                        self._done.append((one, RUNNING, t, addr))
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
        store = self._futs
        ok, ok_tasks = [], []
        out = self._done.append
        for fut in futs:
            task = fut._rhapsody_task
            members = task if task.__class__ is list else (task,)  # a chunk: its tasks
            for t in members:
                if store.get(t["uid"]) is fut:
                    del store[t["uid"]]
            members = [t for t in members if t["uid"] in live]
            if not members:
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
                for t in members:
                    self._report_failure(t, exc, tb)
            elif self.client.status != "running":  # the client lost its scheduler
                self._declare_lost(self.client.status)
            else:  # cancelled (not by us: cancel_task finishes at once) or lost
                for t in members:
                    reason = BackendError(self.name, f"Dask dropped task {t['uid']} "
                                          f"({status}); the scheduler connection was lost "
                                          "or it was canceled outside rhapsody_lab")
                    self._report_failure(t, reason, str(reason))
        if ok:
            results = self._gather(ok, ok_tasks)
            self._held.extend(ok)
            size = 0
            feeder = self._chunks
            wake = False
            for task, res in zip(ok_tasks, results, strict=True):
                if res is None:
                    continue
                if task.__class__ is list:  # a chunk
                    size += sum(map(sys.getsizeof, res[5]))
                    typical = collect_chunk(live, task, res, out)
                    wake |= feeder.measure(task[0]["function"], typical, len(task))
                elif task.get("function") is not None:
                    good, value, tb, t0, t1, slot = res
                    size += sys.getsizeof(value)
                    if good is None:  # refused at the gate: a cancel came first
                        out((task, CANCELED, t1, slot))
                        continue
                    if good:
                        task["return_value"] = value
                        task["stdout"] = result_text(value)
                        task["stderr"] = ""
                        task["exit_code"] = 0
                        out((task, RUNNING, t0, slot))
                        out((task, DONE, t1, slot))
                    else:
                        task["exception"] = value
                        task["stderr"] = tb
                        task["exit_code"] = 1
                        out((task, RUNNING, t0, slot))
                        out((task, FAILED, t1, slot))
                    if feeder is not None:
                        wake |= feeder.measure(task["function"], t1 - t0, 1)
                else:
                    state, stdout, stderr, code, t0, t1, slot = res
                    task["stdout"] = stdout
                    task["stderr"] = stderr
                    task["exit_code"] = code
                    if t0 is not None:
                        out((task, RUNNING, t0, slot))
                    out((task, state, t1, slot))
            self._held_bytes += size
            if wake:
                self._submit_q.put([])  # held tasks wait for these measurements
        if self._done:
            self._wake_drain()

    def _gather(self, futs: list, tasks: list) -> list:
        """The results of finished futures (None for one that could not be fetched)."""
        try:
            return self.client.gather(futs)
        except Exception:
            results = []
            for task, fut in zip(tasks, futs, strict=True):
                try:
                    results.append(self.client.gather(fut))
                except Exception as exc:
                    for t in task if task.__class__ is list else (task,):
                        msg = (f"the result of task {t['uid']} could not be fetched "
                               f"from Dask ({type(exc).__name__}: {exc})")
                        self._report_failure(t, BackendError(self.name, msg), msg)
                    results.append(None)
            return results

    def _report_failure(self, task: dict, exc: BaseException, tb: str) -> None:
        task["exception"] = exc
        task["stderr"] = tb
        task["exit_code"] = 1
        self._done.append((task, FAILED, time.time(), None))
        self._wake_drain()
