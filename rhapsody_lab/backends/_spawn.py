"""A lean child process: ``os.posix_spawnp`` in a new session, pipes and a pidfd polled.

``subprocess.Popen`` + ``communicate`` spends ~150 us of Python per child (argument checks,
an error pipe, a selector object, ``waitpid`` locking), all of it holding the GIL that the
event loop and the other worker threads need. Here one ``posix_spawnp`` call (vfork + exec
inside glibc), one ``poll`` loop over the two pipes (and the child's pidfd, with a timeout
or output to files), and one ``waitpid``. Measured on the 2-core machine: single-threaded,
155-166 us of parent CPU per ``/bin/true`` against 196-213 us for ``subprocess.run``;
two threads of it alone run 1.02-1.08x two threads of ``subprocess.run``; through the
concurrent backend (with its drain ticks), ``/bin/true`` x1000 went from 0.65 to 0.89-1.03
of 2 threads of ``subprocess.run`` (``bench/bench_concurrent.py``, 7-11 interleaved reps).
The GIL is held through ``posix_spawnp`` (~150 us of vfork + exec): a ctypes call that
releases it measured no better (0.87 against 0.90), so there is none.

It covers what ``run_executable`` needs when ``cwd`` is not set and ``env`` does not
change ``PATH`` (``posix_spawnp`` has no chdir in Python 3.11, and it searches the
caller's ``PATH``): the caller falls back to ``Popen`` otherwise (``usable``). As
``Popen(restore_signals=True, start_new_session=True, close_fds=True)`` does: SIGPIPE and
SIGXFSZ back to their defaults, a new session, stdin from ``/dev/null``, and inheritable
descriptors other than 0-2 closed in the child (Python's own are non-inheritable).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from .._procgroup import signal_group

__all__ = ["Child", "run_child", "usable"]

_AVAILABLE = hasattr(os, "posix_spawnp") and hasattr(os, "pidfd_open")
_SIGDEF = tuple(s for s in (getattr(signal, "SIGPIPE", None), getattr(signal, "SIGXFSZ", None))
                if s is not None)
_CHUNK = 65536
_DEVNULL = os.devnull


def usable(cwd: str | None, env: dict | None) -> bool:
    """Whether a task with these options can take the lean path."""
    return _AVAILABLE and cwd is None and (env is None or "PATH" not in env)


class Child:
    """The running child, for cancel: ``pid`` (its group), ``wait(timeout)`` as Popen's."""

    __slots__ = ("_running", "pid", "returncode")

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._running = threading.Lock()  # held until the child is reaped (cheaper than
        self._running.acquire()           # an Event: ~1 us, not ~9 us, per child)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the collecting thread has reaped the child (TimeoutExpired)."""
        if not self._running.acquire(timeout=-1 if timeout is None else timeout):
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
        self._running.release()
        return self.returncode

    def _reaped(self, returncode: int) -> None:
        self.returncode = returncode
        self._running.release()


_INHERITED_TTL = 1.0  # seconds a listing of inheritable descriptors is reused
_inherited_at = [-_INHERITED_TTL, []]


def _inherited() -> list[int]:
    """Inheritable descriptors above 2 (closed in the child, as ``close_fds`` does),
    listed at most once per ``_INHERITED_TTL`` (a listing costs ~20 us per child)."""
    now = time.monotonic()
    if now - _inherited_at[0] < _INHERITED_TTL:
        return _inherited_at[1]
    found = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = []
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    found.append(fd)
            except OSError:
                pass  # the listing's own descriptor, already closed
    _inherited_at[:] = [now, found]
    return found


def _environ() -> Any:
    """The environment for a child: ``os.environ``'s own bytes dict where it has one
    (``os.environ`` itself is decoded and re-encoded item by item: ~50 us per child)."""
    data = getattr(os.environ, "_data", None)
    return data if isinstance(data, dict) else os.environ


def run_child(argv: list[str], env: dict | None, out: int | None, err: int | None,
              timeout: float | None, register: Callable[[Any], Any] | None,
              still_running: Callable[[], Any] | None, notice: float, grace: float,
              ) -> tuple[bytes | None, bytes | None, int, bool]:
    """Run ``argv``; ``out``/``err``: file descriptors to write to, or None for pipes.

    Returns ``(stdout, stderr, returncode, timed_out)`` (output None where it went to a
    file). Raises OSError if the child cannot start (FileNotFoundError, PermissionError).
    ``still_running()`` is called once the child has run ``notice`` seconds; past
    ``timeout`` its group gets SIGTERM, and SIGKILL ``grace`` seconds later.
    """
    pipes: dict[int, list[bytes]] = {}
    actions: list[tuple] = [(os.POSIX_SPAWN_OPEN, 0, _DEVNULL, os.O_RDONLY, 0)]
    ours = []
    for target, given in ((1, out), (2, err)):
        if given is None:
            r, w = os.pipe()
            pipes[r] = []
            ours.append(w)
            actions.append((os.POSIX_SPAWN_DUP2, w, target))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, given, target))
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited()]
    try:
        pid = os.posix_spawnp(argv[0], argv, _environ() if env is None else env,
                              file_actions=actions, setsid=True, setsigdef=_SIGDEF)
    except BaseException:
        for fd in (*ours, *pipes):
            os.close(fd)
        raise
    for fd in ours:
        os.close(fd)
    child = Child(pid)
    if register is not None:
        register(child)
    try:
        timed_out = _collect(child, pipes, timeout, still_running, notice, grace)
    finally:
        for fd in pipes:
            os.close(fd)
    outs = [b"".join(chunks) for chunks in pipes.values()]
    stdout = outs.pop(0) if out is None else None
    stderr = outs.pop(0) if err is None else None
    return stdout, stderr, child.returncode, timed_out  # type: ignore[return-value]


def _collect(child: Child, pipes: dict[int, list[bytes]], timeout: float | None,
             still_running: Callable[[], Any] | None, notice_after: float,
             grace: float) -> bool:
    """Read the pipes to their end and reap the child; True if ``timeout`` ended it."""
    poller = select.poll()
    for fd in pipes:
        poller.register(fd, select.POLLIN)
    # the exit is watched (a pidfd) only where it matters: with a timeout, or no pipes to
    # read to their end; otherwise the pipes' end, then waitpid, as Popen.communicate does
    pidfd = os.pidfd_open(child.pid) if timeout is not None or not pipes else -1
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    open_pipes, exited, timed_out = set(pipes), pidfd < 0, False
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    notice = None if still_running is None else start + notice_after
    try:
        while open_pipes or not exited:
            wake = min((t for t in (deadline, notice) if t is not None), default=None)
            wait_ms = -1 if wake is None else max(0, int((wake - time.monotonic()) * 1000) + 1)
            for fd, _ in poller.poll(wait_ms):
                if fd == pidfd:
                    exited = True
                    poller.unregister(pidfd)
                    continue
                chunk = os.read(fd, _CHUNK)
                if chunk:
                    pipes[fd].append(chunk)
                else:
                    poller.unregister(fd)
                    open_pipes.discard(fd)
            now = time.monotonic()
            if notice is not None and now >= notice:
                notice = None
                still_running()  # type: ignore[misc]
            if deadline is not None and now >= deadline:
                if not timed_out:  # first SIGTERM, then SIGKILL after the grace
                    timed_out, deadline = True, now + grace
                    signal_group(child.pid, signal.SIGTERM)
                else:
                    deadline = None
                    signal_group(child.pid, signal.SIGKILL)
    except BaseException:
        signal_group(child.pid, signal.SIGKILL)  # never leave it running unreaped
        raise
    finally:
        if pidfd >= 0:
            os.close(pidfd)
        _, status = os.waitpid(child.pid, 0)
        child._reaped(os.waitstatus_to_exitcode(status))
    if timed_out:  # the leader may be gone while its group lives on
        signal_group(child.pid, signal.SIGKILL)
    return timed_out
