"""The native mode's worker processes: Dragon processes fed chunks through Dragon queues.

Measured here (2 cores, 5,000 null tasks in chunks of 1,024): Dragon's own
``multiprocessing`` Pool costs the driver 2-4 us of CPU per task (three handler threads
that poll, a task-handler hop, a result thread), while worker processes that take chunks
from one Dragon queue and put outcomes on another cost it almost nothing and move 4-5x
more tasks a second. So the backend keeps its own workers:

- one task queue (``(chunk id, token, blobs, items)`` or ``None`` to stop), shared by the
  workers, so an idle worker takes the next chunk;
- one result queue, read by one driver thread that hands each outcome to ``on_result``;
- one start queue on which a worker says which chunk it starts (``(chunk id, index, pid,
  host)``, chunk 0 when it comes up), so a watcher can tell which chunk a dead worker
  held (``take_starts`` and ``dead``); ``respawn`` replaces a dead worker.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ChunkWorkers"]

log = logging.getLogger(__name__)


class ChunkWorkers:
    """``n`` Dragon worker processes running ``_dragon_worker.worker_main``."""

    def __init__(self, n: int, on_result: Callable[[int, Any], None],
                 on_error: Callable[[int, BaseException], None], name: str):
        self.n = n
        self._on_result = on_result
        self._on_error = on_error
        self._name = name
        self._taskq: Any = None
        self._resultq: Any = None
        self._startq: Any = None
        self._procs: list[Any] = []
        self._pids: dict[int, tuple[int, str]] = {}  # worker index -> (os pid, host)
        self._reader: threading.Thread | None = None
        self._host = socket.gethostname()
        self.closed = False

    def start(self) -> None:
        """Create the queues, start the workers and the result reader (blocking)."""
        from dragon.native.queue import Queue
        self._taskq, self._resultq, self._startq = Queue(), Queue(), Queue()
        self._procs = [self._spawn(i) for i in range(self.n)]
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"rhapsody-{self._name}-results")
        self._reader.start()

    def _spawn(self, index: int) -> Any:
        # a native Dragon process runs the function itself (a multiprocessing one would
        # import the user's __main__ again, which a script without a main guard forbids)
        from dragon.native.process import Process

        from ._dragon_worker import worker_main
        proc = Process(target=worker_main,
                       args=(index, self._taskq, self._resultq, self._startq))
        proc.start()
        return proc

    def submit(self, cid: int, token: str, blobs: dict, items: list) -> None:
        """Queue one chunk (any thread); a worker that is free takes it."""
        self._taskq.put((cid, token, blobs, items))

    def _read(self) -> None:
        """Result thread: every outcome to ``on_result`` (or ``on_error``), until None."""
        get = self._resultq.get
        while True:
            try:
                msg = get()
            except Exception as exc:  # the runtime going away
                if not self.closed:
                    log.warning("%s: reading pool results failed: %r", self._name, exc)
                return
            if msg is None:
                return
            try:
                if len(msg) == 2:
                    self._on_result(*msg)
                else:  # (chunk id, None, reason): the worker could not send its outcomes
                    self._on_error(msg[0], RuntimeError(msg[2]))
            except Exception as exc:  # never stop reading: fail that chunk, go on
                log.exception("%s: handling the outcome of chunk %s failed", self._name,
                              msg[0])
                self._on_error(msg[0], exc)

    # -- the watcher's view ------------------------------------------------------------
    def take_starts(self) -> list[tuple[int, int, float]]:
        """``(chunk id, worker index, start time)`` of the chunks started since the last
        call."""
        started = []
        while True:
            try:
                cid, index, pid, host, t = self._startq.get(block=False)
            except Exception:  # queue.Empty (or the runtime going away)
                return started
            self._pids[index] = (pid, host)
            if cid:
                started.append((cid, index, t))

    def pid(self, index: int) -> int | None:
        entry = self._pids.get(index)
        return entry[0] if entry else None

    def dead(self) -> list[int]:
        """Indexes of the workers that came up and have died since."""
        out = []
        for index, (pid, host) in list(self._pids.items()):
            if host == self._host:
                alive = _pid_alive(pid)
            else:  # another node: ask the runtime
                try:
                    alive = self._procs[index].is_alive
                except Exception:
                    alive = True  # cannot tell: assume so
            if not alive:
                out.append(index)
        return out

    def respawn(self, index: int) -> None:
        """Replace a dead worker (its chunk, if any, is the caller's business)."""
        self._pids.pop(index, None)
        if self.closed:
            return
        try:
            self._procs[index] = self._spawn(index)
        except Exception as exc:
            log.warning("%s: could not replace pool worker %d: %r", self._name, index, exc)

    # -- shutdown ----------------------------------------------------------------------
    def stop(self) -> None:
        """End the workers (running chunks are abandoned), the reader and the queues."""
        self.closed = True
        procs, self._procs = self._procs, []
        for proc in procs:
            try:
                proc.kill()
            except Exception:
                pass
        for proc in procs:
            try:
                proc.join(10)
            except Exception:
                pass
        if self._resultq is not None:
            try:
                self._resultq.put(None)
            except Exception:
                pass
        if self._reader is not None:
            self._reader.join(5)
        for q in (self._taskq, self._resultq, self._startq):
            if q is not None:
                try:
                    q.destroy()
                except Exception:
                    pass


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False
