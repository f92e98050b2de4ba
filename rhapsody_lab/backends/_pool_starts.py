"""Which process-pool task started when: a datagram from the worker, read by one thread.

A ``ProcessPoolExecutor`` tells its caller nothing until a work item ends, so a long task
would show QUEUED while it runs. Each work item carries the address of a Unix datagram
socket in a private (0700) directory; the worker sends ``uid`` and start time when it
starts the item's first task, and for a later task of the item only once the tasks before
it took over ``GAP`` seconds (tiny tasks: one datagram per item of up to 32 tasks).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable

__all__ = ["GAP", "StartListener", "announcer"]

GAP = 0.001  # seconds of work after which a worker announces its next task's start
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


_senders: dict[str, socket.socket] = {}  # in a worker: one socket per listener address


def announcer(address: str | None) -> Callable[[str, float], None] | None:
    """In a worker: a function sending ``(uid, start)`` to the listener at ``address``."""
    if address is None:
        return None
    sock = _senders.get(address)
    if sock is None:
        sock = _senders[address] = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    pid = os.getpid()

    def send(uid: str, start: float) -> None:
        try:
            sock.sendto(f"{uid} {start!r} {pid}".encode(), address)
        except OSError:  # the driver is gone or its buffer is full: the result still says
            pass
    return send
