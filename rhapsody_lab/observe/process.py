"""Observe a session from a helper process, so observing costs the kernel almost nothing.

At 100,000 null tasks/s the engine spends ~10 µs per task; folding 4 events per task into
metrics and encoding them as JSON costs more than that in Python, and every thread of
the kernel shares one GIL. So the session's subscriber here only ``marshal``s each batch
(~0.1 µs per event, in C) onto a pipe; a child process (``_child.py``) runs ``Metrics``
and the ``Journal`` on its own core. Dashboards read through ``RemoteMetrics`` (same
reader methods as ``Metrics``, one small request each, on a side socket answered at once);
``sync()`` and journal requests travel on the event pipe, so they see every event sent
before them.

The child exits when its input closes: when the session's event stream has closed, when
``close()`` is called, or when the kernel dies (it then writes what it already received,
so the journal loses nothing that left the kernel).
"""

from __future__ import annotations

import atexit
import json
import logging
import marshal
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection
from typing import Any

from ..api.errors import SessionError
from ..api.events import expand

__all__ = ["ObserverProcess", "RemoteJournal", "RemoteMetrics", "observer_for"]

log = logging.getLogger(__name__)
_F_SETPIPE_SZ = 1031
_BASIC = (int, float, str, bytes, bool, type(None))
_CACHE_TTL = 0.2  # seconds an answer is reused (by the other plots of one refresh)


def _plain(items: list) -> list:
    """Events (runs expanded) whose slots marshal cannot carry, those slots as text."""
    out = []
    for t, uid, state, backend, slot in expand(items):
        if not isinstance(slot, _BASIC):
            try:
                marshal.dumps(slot)
            except ValueError:
                slot = repr(slot)
        out.append((t, uid, state, backend, slot))
    return out


class ObserverProcess:
    """The helper process of one session (see the module docstring)."""

    def __init__(self, session: Any, options: dict[str, Any] | None = None):
        self.options = dict(options or {})
        self._backends = session.backends
        self._events = session.events
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        mine, theirs = socket.socketpair()
        try:
            import fcntl
            fcntl.fcntl(w_in, _F_SETPIPE_SZ, 1 << 20)  # fewer wake-ups; best effort
        except (OSError, ImportError):
            pass
        pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rhapsody_lab.observe._child", str(r_in), str(w_out),
                 str(theirs.fileno()), json.dumps(self.options)],
                pass_fds=(r_in, w_out, theirs.fileno()), stdin=subprocess.DEVNULL, env=env)
        finally:
            os.close(r_in)
            os.close(w_out)
            theirs.close()
        self._side = Connection(mine.detach())
        self._side_lock = threading.Lock()
        self._out = Connection(w_in, readable=False)
        self._in = Connection(r_out, writable=False)
        self._wlock = threading.Lock()
        self._rpc = threading.Lock()
        self._closed = False
        session.events.subscribe(self._on_batch, runs=True)  # runs travel as columns
        self._session = weakref.ref(session)
        threading.Thread(target=self._watch, name="rhapsody-observer-watch",
                         daemon=True).start()
        atexit.register(self.close)

    # -- kernel side: the subscriber -----------------------------------------------------
    def _on_batch(self, items: list) -> None:
        if self._closed:
            return
        cap = {name: b.capacity() for name, b in list(self._backends.items())}
        try:
            payload = marshal.dumps((cap, items))
        except ValueError:
            payload = marshal.dumps((cap, _plain(items)))
        self._send(b"E" + payload)

    def _send(self, frame: bytes) -> None:
        with self._wlock:
            if self._closed:
                raise SessionError("the observer process is closed")
            try:
                self._out.send_bytes(frame)
            except OSError as exc:
                self._closed = True
                raise SessionError(f"the observer process died (exit code "
                                   f"{self.proc.poll()}); attach again") from exc

    def request(self, method: str, *args: Any) -> Any:
        """Run ``method`` in the child after every event sent so far; return its result."""
        with self._rpc:
            self._send(b"R" + pickle.dumps((method, args)))
            return self._answer(self._in)

    def read(self, method: str, *args: Any) -> Any:
        """Run a reader in the child now (it may not have folded the newest events yet)."""
        with self._side_lock:
            if self._closed:
                raise SessionError("the observer process is closed")
            try:
                self._side.send_bytes(pickle.dumps((method, args)))
            except OSError as exc:
                raise SessionError(f"the observer process died (exit code "
                                   f"{self.proc.poll()}); attach again") from exc
            return self._answer(self._side)

    def _answer(self, conn: Connection) -> Any:
        try:
            ok, value = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError) as exc:
            self._closed = True
            raise SessionError(f"the observer process died (exit code "
                               f"{self.proc.poll()}); attach again") from exc
        if not ok:
            raise SessionError(value)
        return value

    # -- life cycle ----------------------------------------------------------------------
    def _watch(self) -> None:
        # the session's close() drains its stream last: only then is every event here
        while not self._closed:
            threading.Event().wait(0.25)
            session = self._session()
            done = session is None or getattr(self._events, "_closed", False)
            del session
            if done or self.proc.poll() is not None:
                self.close()
                return

    @property
    def alive(self) -> bool:
        return not self._closed and self.proc.poll() is None

    def close(self, timeout: float = 10.0) -> None:
        """Let the child fold and write everything it received, then end it."""
        with self._wlock:
            if self._closed and self.proc.poll() is not None:
                return
            self._closed = True
            try:
                self._events.unsubscribe(self._on_batch)
            except Exception:
                pass
            try:
                self._out.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("observer process %s did not exit; killing it", self.proc.pid)
            self.proc.kill()
            self.proc.wait()
        for conn in (self._in, self._side):
            try:
                conn.close()
            except OSError:
                pass
        atexit.unregister(self.close)


class RemoteMetrics:
    """``Metrics`` readers answered by the observer process.

    Answers are reused for ``_CACHE_TTL`` seconds, and ``prefetch(requests)`` fetches
    what every plot of a refresh will read in one round trip: a thread waiting for a busy
    kernel's GIL after each socket read would otherwise make refreshes slow.
    """

    def __init__(self, observer: ObserverProcess, *, bin_width: float = 0.5,
                 window: float = 5.0, max_rectangles: int = 10_000, **_: Any):
        self.observer = observer
        self._cache: dict[tuple, tuple[float, Any]] = {}
        self._cache_lock = threading.Lock()
        self.bin_width = bin_width
        self.window = window
        self.max_rectangles = max_rectangles

    def _get(self, kind: str, name: str, *args: Any) -> Any:
        key = (kind, name, args)
        now = time.monotonic()
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < _CACHE_TTL:
                return _copy(hit[1])
        value = self.observer.read(kind, name, *args)
        self._store([(key, value)], now)
        return _copy(value)

    def _store(self, items: list, now: float) -> None:
        with self._cache_lock:
            if len(self._cache) > 128:
                self._cache.clear()
            for key, value in items:
                self._cache[key] = (now, value)

    def prefetch(self, requests: list[tuple[str, str, tuple]]) -> None:
        """Fetch ``(kind, name, args)`` answers in one round trip (kind: call or attr)."""
        keys = list(dict.fromkeys((k, n, tuple(a)) for k, n, a in requests))
        if not keys:
            return
        now = time.monotonic()
        values = self.observer.read("bundle", keys)
        self._store(list(zip(keys, values, strict=True)), now)

    backends = property(lambda self: self._get("attr", "backends"))
    capacity = property(lambda self: self._get("attr", "capacity"))
    rect_index = property(lambda self: self._get("attr", "rect_index"))
    total_tasks = property(lambda self: self._get("attr", "total_tasks"))
    events_seen = property(lambda self: self._get("attr", "events_seen"))

    def series(self, backend: str | None = None, since: int | None = None):
        return self._get("call", "series", backend, since)

    def rectangles(self, since: int = 0, limit: int | None = None):
        return self._get("call", "rectangles", since, limit)

    def rows(self) -> dict[int, str]:
        return self._get("call", "rows")

    def latency(self, backend: str | None = None) -> dict[str, list]:
        return self._get("call", "latency", backend)

    def counts(self, backend: str | None = None) -> dict[str, int]:
        return self.observer.read("call", "counts", backend)

    def summary(self) -> dict[str, Any]:
        return self.observer.read("call", "summary")

    def sync(self) -> RemoteMetrics:
        """Fold in every event delivered to this process's subscriber so far."""
        self.observer.request("call", "sync")
        with self._cache_lock:
            self._cache.clear()
        return self

    def close(self) -> None:
        self.observer.close()

    def __repr__(self) -> str:
        state = "alive" if self.observer.alive else "closed"
        return f"<RemoteMetrics pid={self.observer.proc.pid} {state}>"


class RemoteJournal:
    """A journal written by the observer process; ``close()`` stops it."""

    def __init__(self, observer: ObserverProcess, path: str):
        self.observer = observer
        self.path = path
        self.events_written: int | None = None

    @property
    def open(self) -> bool:
        return self.events_written is None and self.observer.alive

    def write_resources(self, rows: list) -> None:
        """Append resource readings (after every event sent so far)."""
        if self.open:
            self.observer.request("write_resources", self.path, list(rows))

    def close(self) -> None:
        """Stop journaling (everything received so far is written first)."""
        if self.events_written is not None:
            return
        if self.observer.alive:
            try:
                self.events_written = self.observer.request("close_journal", self.path)
                return
            except SessionError:
                pass
        self.observer.close()  # closing anyway: wait until the child has written all
        self.events_written = -1

    def __repr__(self) -> str:
        return f"<RemoteJournal {self.path}>"


def _copy(value: Any) -> Any:
    """A copy deep enough that plots may keep (and Bokeh extend) what they were given."""
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    if isinstance(value, dict):
        return {k: list(v) if isinstance(v, list) else v for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


_observers: dict[int, tuple[weakref.ref, ObserverProcess]] = {}
_lock = threading.Lock()


def observer_for(session: Any, options: dict[str, Any] | None = None) -> ObserverProcess:
    """The session's observer process (started on first call)."""
    key = id(session)
    with _lock:
        hit = _observers.get(key)
        if hit is not None and hit[0]() is session and hit[1].alive:
            return hit[1]
        obs = ObserverProcess(session, options)
        _observers[key] = (weakref.ref(session), obs)
        return obs
