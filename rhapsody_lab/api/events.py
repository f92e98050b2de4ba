"""The one event stream: every task state change, from every backend, to every observer.

A backend (on any thread) appends a small tuple ``(time, uid, state, backend, slot)`` with
``emit``; appending is one atomic ``deque.append``, so it never blocks dispatch. The stream
flushes batches on the event loop: *inline* subscribers (cheap, O(1) per event, like the
statistics) are called there; every other subscriber gets the batch on its own thread, so a
slow or failing subscriber lags or logs but never stalls or breaks task dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

__all__ = ["Event", "EventStream", "Subscriber"]

log = logging.getLogger(__name__)


class Event(NamedTuple):
    """One state change of one task. ``slot`` is where it ran (worker, pid), if known."""

    time: float
    uid: str
    state: str
    backend: str
    slot: object = None


#: A subscriber takes a batch of events (plain tuples in ``Event`` field order).
Subscriber = Callable[[Sequence[tuple]], None]

_MAX_INLINE_BATCH = 4_000  # bound the time one flush holds the loop


class _Threaded:
    """Delivers batches to one subscriber on its own daemon thread."""

    def __init__(self, fn: Subscriber, name: str):
        self.fn = fn
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.errors = 0
        self.delivered = 0
        self._idle = threading.Event()
        self._idle.set()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def put(self, batch: list) -> None:
        self._idle.clear()
        self.queue.put(batch)

    def _run(self) -> None:
        get = self.queue.get
        while True:
            batch = get()
            if batch is None:
                self._idle.set()
                return
            try:
                self.fn(batch)
                self.delivered += len(batch)
            except Exception:  # a failing subscriber must not break the stream
                self.errors += 1
                if self.errors <= 3:
                    log.exception("event subscriber %r failed; it keeps receiving events",
                                  self.fn)
            if self.queue.empty():
                self._idle.set()

    def wait_idle(self, timeout: float | None) -> bool:
        return self._idle.wait(timeout)

    def stop(self) -> None:
        self.queue.put(None)


class EventStream:
    """Collects events from backends and delivers them in batches to subscribers."""

    def __init__(self, flush_interval: float = 0.1):
        self._buf: deque[tuple] = deque()
        self.emit: Callable[[tuple], None] = self._buf.append
        self._inline: list[Subscriber] = []
        self._threaded: dict[Subscriber, _Threaded] = {}
        self._interval = flush_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flush_pending = False
        self._closed = False
        self.emitted_total = 0

    # -- subscribing -------------------------------------------------------------------
    def subscribe(self, fn: Subscriber, *, inline: bool = False) -> Subscriber:
        """Deliver every later batch to ``fn``; ``inline`` only for O(1)-per-event code."""
        if not callable(fn):
            from .errors import SessionError
            raise SessionError(f"subscriber must be callable taking a list of events, "
                               f"got {fn!r}")
        if inline:
            self._inline.append(fn)
        else:
            self._threaded[fn] = _Threaded(fn, f"rhapsody-events-{len(self._threaded)}")
        return fn

    def unsubscribe(self, fn: Subscriber) -> None:
        """Stop delivering to ``fn`` (pending batches still reach a threaded subscriber)."""
        if fn in self._inline:
            self._inline.remove(fn)
        worker = self._threaded.pop(fn, None)
        if worker is not None:
            worker.stop()

    # -- emitting (any thread) ---------------------------------------------------------
    def emit_now(self, uid: str, state: str, backend: str, slot: object = None) -> None:
        """Emit one event stamped with the current time."""
        self._buf.append((time.time(), uid, state, backend, slot))

    # -- delivery (event loop) ---------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Flush on ``loop`` every ``flush_interval`` seconds while events arrive."""
        if self._loop is loop:
            return
        self._loop = loop
        self._timer = loop.call_later(self._interval, self._tick)

    def _tick(self) -> None:
        if self._closed or self._loop is None:
            return
        if self._buf:
            self.flush()
        self._timer = self._loop.call_later(self._interval, self._tick)

    def flush_soon(self) -> None:
        """Schedule a flush on the bound loop (coalesced; call from the loop thread)."""
        if not self._flush_pending and self._loop is not None:
            self._flush_pending = True
            self._loop.call_soon(self._flush_cb)

    def _flush_cb(self) -> None:
        self._flush_pending = False
        self.flush()

    def flush(self, limit: int | None = _MAX_INLINE_BATCH) -> int:
        """Deliver what has been emitted (at most ``limit`` events); returns the count."""
        buf = self._buf
        n = len(buf)
        if not n:
            return 0
        if limit is not None and n > limit:
            n = limit
            self.flush_soon()
        pop = buf.popleft
        batch = [pop() for _ in range(n)]
        self.emitted_total += n
        for fn in self._inline:
            try:
                fn(batch)
            except Exception:
                log.exception("inline event subscriber %r failed", fn)
        for worker in self._threaded.values():
            worker.put(batch)
        return n

    def drain(self, timeout: float | None = 5.0) -> bool:
        """Flush everything and wait until threaded subscribers have processed it."""
        while self.flush(limit=None):
            pass
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in list(self._threaded.values()):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not worker.wait_idle(left):
                return False
        return True

    def close(self) -> None:
        """Deliver what is left and stop the subscriber threads."""
        self.drain()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for worker in self._threaded.values():
            worker.stop()
        self._threaded.clear()
        self._loop = None

    @property
    def pending(self) -> int:
        """Events emitted and not yet flushed."""
        return len(self._buf)
