"""The one thread that talks to Flux: batch submits, cancels and the job-manager journal.

The event loop never makes a Flux call. It appends work to an inbox and writes a byte to
a pipe the thread's Flux reactor watches; the thread then submits queued jobs with
``flux.job.submit_async`` (futures, no round trip waited for; at most ``window`` jobs in
Flux at once, each job that ends letting the next in), and follows all jobs at once
through one streaming ``job-manager.events-journal`` RPC (only ``start``, ``exception``
and ``finish``: three messages per job). A job is known by the id its submit reply gives;
events of an unknown id that arrive while replies are outstanding wait for them, so none
is lost to that race. Outcomes go to ``on_event(task, name, timestamp, context, jobid)``
(True: the job ended), which hands them to the backend's one drain.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["FluxLink"]

_EVENTS = {"start": 1, "exception": 1, "finish": 1}


class FluxLink:
    """A Flux handle owned by one thread: ``submit``/``cancel`` from any thread."""

    def __init__(self, flux: Any, uri: str, token: str,
                 on_event: Callable[[dict, str, float, dict, int], bool],
                 on_refused: Callable[[dict, BaseException], None],
                 on_lost: Callable[[str], None], prepare: Callable[[dict], str | None]):
        self.flux = flux
        self.uri = uri
        self.token = token
        self.on_event = on_event
        self.on_refused = on_refused
        self.on_lost = on_lost
        self.prepare = prepare  # task -> jobspec JSON (None: refused, already reported)
        self.novalidate = False  # skip the ingest validator (instance owner only)
        #: jobs in Flux at once (submitted, not ended); the rest wait in ``_backlog``, so
        #: a cancel or a shutdown ends them without Flux and Flux's queue stays short
        self.window = 512
        self.max_jobs: int | None = None  # the window, if given (else 512 or 4 per core)
        self._backlog: deque = deque()
        self._inflight = 0
        self.cores = 0
        self.gpus = 0
        self.nodes = 0
        self._inbox: deque = deque()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        self._signalled = False
        self._lock = threading.Lock()
        self._jobs: dict[int, dict] = {}      # jobid -> task, from submit reply to its end
        self._ids: dict[str, int] = {}        # uid -> jobid (from submit replies)
        self._pending: dict[Any, dict] = {}   # submit future -> task
        self._early: dict[int, list] = {}     # jobid -> events seen before its submit reply
        self._cancel_wanted: set[str] = set()
        self._stopping = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="rhapsody-flux")

    # -- from any thread ---------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        """Connect, read the resources, start the journal (blocking); raises on failure."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"no answer from the Flux instance at {self.uri} in {timeout}s")
        if self._error is not None:
            raise self._error

    def submit(self, tasks: list) -> None:
        self._post(("submit", tasks))

    def cancel(self, uid: str) -> None:
        self._post(("cancel", uid))

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread (its handle closed); jobs are not touched."""
        if self._thread.is_alive():
            self._post(("stop", None))
            self._thread.join(timeout)
        if self._thread.is_alive():
            return  # its reactor still watches the pipe: closing it would abort libev
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass

    def jobid(self, uid: str) -> int | None:
        return self._ids.get(uid)

    def _post(self, item: tuple) -> None:
        self._inbox.append(item)
        with self._lock:
            if self._signalled:
                return
            self._signalled = True
        try:
            os.write(self._wfd, b"x")
        except OSError:
            pass

    # -- the thread ----------------------------------------------------------------------
    def _main(self) -> None:
        flux = self.flux
        try:
            h = self.h = flux.Flux(self.uri)
            self._resources(h)
            journal = h.rpc("job-manager.events-journal", {"full": False, "allow": _EVENTS},
                            flags=flux.constants.FLUX_RPC_STREAMING)
            first = journal.get()  # the backlog's end: from here on, every job's events
            journal.reset()
            if first.get("id") != -1:
                self._journal_entry(first)
            journal.then(self._journal_cb)
            watcher = h.fd_watcher_create(self._rfd, self._inbox_cb,
                                          events=flux.constants.FLUX_POLLIN)
            watcher.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        reason = "the connection to the instance closed"
        try:
            h.reactor_run()
        except BaseException as exc:  # a lost connection, or an error in a callback
            reason = f"{type(exc).__name__}: {exc}"
        watcher.stop()
        if not self._stopping:
            self.on_lost(reason)
        # the bindings close a handle when it is collected (an explicit close() raises)
        self._pending.clear()
        self.h = None
        del h, journal, watcher

    def _resources(self, h: Any) -> None:
        try:
            from flux.resource import resource_list
            rl = resource_list(h).get()
            self.cores, self.gpus, self.nodes = rl.all.ncores, rl.all.ngpus, rl.all.nnodes
            self.window = max(self.window, 4 * self.cores)  # every core kept busy
        except Exception:  # an instance without a scheduler answering: not checked here
            self.cores, self.gpus = 0, -1
        if self.max_jobs is not None:
            self.window = self.max_jobs

    def _inbox_cb(self, *_: Any) -> None:
        try:
            with self._lock:
                self._signalled = False
            try:
                os.read(self._rfd, 65536)
            except BlockingIOError:
                pass
            inbox = self._inbox
            while inbox:
                what, arg = inbox.popleft()
                if what == "submit":
                    self._submit(arg)
                elif what == "cancel":
                    self._cancel(arg)
                else:
                    self._stopping = True
                    self.h.reactor_stop()
                    return
        except Exception as exc:
            self._fatal(exc)

    def _submit(self, tasks: list) -> None:
        self._backlog.extend(tasks)
        self._pump()

    def _pump(self) -> None:
        """Submit from the backlog while fewer than ``window`` jobs are in Flux."""
        backlog = self._backlog
        room = self.window - self._inflight
        if not backlog or room <= 0:
            return
        submit_async = self.flux.job.submit_async
        pending = self._pending
        cb = self._submitted
        novalidate = self.novalidate
        prepare = self.prepare
        while backlog and room > 0:
            task = backlog.popleft()
            spec = prepare(task)
            if spec is None:
                continue
            try:
                fut = submit_async(self.h, spec, novalidate=novalidate)
            except OSError as exc:
                self.on_refused(task, exc)
                continue
            pending[fut] = task
            fut.then(cb)
            room -= 1
            self._inflight += 1

    def _submitted(self, fut: Any) -> None:
        pending = self._pending
        task = pending.pop(fut, None)
        if task is None:
            return
        try:
            try:
                jobid = int(fut.get_id())
            except OSError as exc:
                self._inflight -= 1
                self.on_refused(task, exc)
                self._pump()
                return
            uid = task["uid"]
            self._ids[uid] = jobid
            self._jobs[jobid] = task
            early = self._early.pop(jobid, None)
            if early:
                self._deliver(jobid, task, early)
            if not pending:
                self._early.clear()  # every reply is in: the rest are other clients' jobs
            if uid in self._cancel_wanted and jobid in self._jobs:
                self._cancel(uid)
        except Exception as exc:
            self._fatal(exc)

    def _cancel(self, uid: str) -> None:
        jobid = self._ids.get(uid)
        if jobid is None:
            self._cancel_wanted.add(uid)  # its id comes with the submit reply
            return
        self._cancel_wanted.discard(uid)
        try:
            self.flux.job.cancel_async(self.h, jobid, "canceled by rhapsody_lab")
        except OSError:
            pass  # already inactive: its journal events say how it ended

    def _journal_cb(self, fut: Any) -> None:
        try:
            resp = fut.get()
        except OSError as exc:
            if not self._stopping:
                why = "ENODATA" if exc.errno == errno.ENODATA else str(exc)
                self._fatal(RuntimeError(f"the job-manager journal ended ({why})"))
            return
        except Exception as exc:
            self._fatal(exc)
            return
        fut.reset()
        try:
            self._journal_entry(resp)
        except Exception as exc:
            self._fatal(exc)

    def _journal_entry(self, resp: dict) -> None:
        jobid = resp["id"]
        task = self._jobs.get(jobid)
        if task is not None:
            self._deliver(jobid, task, resp["events"])
        elif self._pending:  # perhaps ours, its submit reply still on the way
            self._early.setdefault(jobid, []).extend(resp["events"])

    def _deliver(self, jobid: int, task: dict, events: list) -> None:
        on_event = self.on_event
        for entry in events:
            if on_event(task, entry["name"], entry["timestamp"], entry.get("context") or {},
                        jobid):
                del self._jobs[jobid]  # it ended: later events of it are not needed
                self._ids.pop(task["uid"], None)
                self._inflight -= 1
                self._pump()
                return

    def _fatal(self, exc: BaseException) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.on_lost(f"{type(exc).__name__}: {exc}")
        try:
            self.h.reactor_stop()
        except Exception:
            pass
