"""Which process-pool task started when: a datagram from the worker, read by one thread.

A ``ProcessPoolExecutor`` tells its caller nothing until a work item ends, so a long task
would show QUEUED while it runs. Each work item carries the address of a Unix datagram
socket in a private (0700) directory. In the worker, a monitor thread looks every ``GAP``
seconds while an item runs; a task it finds running for ``GAP`` or more is announced
(``uid``, start time). Tasks shorter than that are never announced (their results carry
their starts): sending a datagram at every start cost 15% of null-task throughput.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable

__all__ = ["GAP", "Monitor", "StartListener", "monitor"]

GAP = 0.01  # a task running this long shows RUNNING (within about twice this)
_MAX = 4096  # bytes of one datagram: "uid start pid"


class StartListener:
    """Calls ``on_start(uid, time, pid)`` on its own thread for each start a worker sends."""

    def __init__(self, on_start: Callable[[str, float, int], None]):
        self._dir = tempfile.mkdtemp(prefix="rhapsody-lab-starts-")  # mode 0700
        self.address = os.path.join(self._dir, "starts")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.address)
        self._on_start = on_start
        self._thread = threading.Thread(target=self._run, name="rhapsody-pool-starts",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        recv, on_start = self._sock.recv, self._on_start
        while True:
            try:
                msg = recv(_MAX)
            except OSError:  # closed
                return
            if not msg:
                return
            try:
                uid, start, pid = msg.decode().rsplit(" ", 2)
                on_start(uid, float(start), int(pid))
            except Exception:  # a malformed datagram: never stop listening for it
                continue

    def close(self) -> None:
        try:  # an empty datagram ends the thread (close alone does not wake recv)
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(b"", self.address)
        except OSError:
            pass
        self._thread.join(2)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class Monitor:
    """In a worker: announces the task that runs now once it has run ``GAP`` seconds."""

    def __init__(self, address: str):
        self.address = address
        self.current: tuple[str, float] | None = None  # (uid, start), set per task
        self._busy = threading.Event()  # set while a work item runs (two calls an item)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="rhapsody-starts", daemon=True).start()

    def begin(self) -> None:
        self._busy.set()

    def end(self) -> None:
        self.current = None
        self._busy.clear()

    def _run(self) -> None:
        sent = None
        while True:
            self._busy.wait()
            time.sleep(GAP)
            cur = self.current
            if cur is not None and cur is not sent and time.time() - cur[1] >= GAP:
                sent = cur
                try:
                    self._sock.sendto(f"{cur[0]} {cur[1]!r} {self._pid}".encode(),
                                      self.address)
                except OSError:  # the driver is gone: its result still tells
                    pass


_monitors: dict[str, Monitor] = {}  # in a worker: one per listener address


def monitor(address: str | None) -> Monitor | None:
    """In a worker: the monitor for the listener at ``address`` (started once)."""
    if address is None:
        return None
    mon = _monitors.get(address)
    if mon is None or mon._pid != os.getpid():
        mon = _monitors[address] = Monitor(address)
    return mon
