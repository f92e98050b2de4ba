"""The one event stream: every task state change, from every backend, to every observer.

A backend (on any thread) appends a small tuple ``(time, uid, state, backend, slot)`` with
``emit``; appending is one atomic ``deque.append``, so it never blocks dispatch. Many tasks
changing state together (a hand-off, a drained batch) go in as one *run* (``emit_run``):
subscribers see its events as tuples, in order, but one registered with ``runs=True`` (the
observer process, which serialises them) gets the run as columns. The stream
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
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from typing import NamedTuple

__all__ = ["RUN", "Event", "EventStream", "Subscriber", "expand", "run_events"]

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

#: First field of a run record ``(RUN, times, uids, state, backend, slots)``; ``times`` and
#: ``slots`` are lists, or one value for every task. An event has its float time there.
RUN = "rhapsody_lab.run"


def run_events(times: float | list, uids: list, state: str, backend: str,
               slots: object = None) -> Iterator[tuple]:
    """The event tuples of one run (``times``/``slots``: one value for all, or a list)."""
    return zip(times if times.__class__ is list else repeat(times), uids, repeat(state),
               repeat(backend), slots if slots.__class__ is list else repeat(slots))


def expand(items: Sequence[tuple]) -> list[tuple]:
    """Event tuples of stream items (events and runs), in order."""
    out: list[tuple] = []
    add, add_many = out.append, out.extend
    for item in items:
        if item[0].__class__ is str:  # RUN (equal, not identical, once unmarshalled)
            add_many(run_events(*item[1:]))
        else:
            add(item)
    return out


class _Threaded:
    """Delivers batches to one subscriber on its own daemon thread."""

    def __init__(self, fn: Subscriber, name: str, runs: bool = False):
        self.fn = fn
        self.runs = runs  # gets runs as records (see ``expand``), not expanded
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
        self._inline_runs: dict[Subscriber, Subscriber] = {}  # fn -> its on_runs
        self._threaded: dict[Subscriber, _Threaded] = {}
        self._interval = flush_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flush_pending = False
        self._closed = False
        self.emitted_total = 0
        self._runs_wanted = 0  # subscribers that take runs as records
        self._run_lock = threading.Lock()
        self._runs = 0  # run records in the buffer
        self._run_extra = 0  # their events beyond one each (for ``pending``)

    # -- subscribing -------------------------------------------------------------------
    def subscribe(self, fn: Subscriber, *, inline: bool = False, runs: bool = False,
                  on_runs: Subscriber | None = None) -> Subscriber:
        """Deliver every later batch to ``fn``; ``inline`` only for O(1)-per-event code.

        ``runs=True`` (threaded only): ``fn`` gets stream items, with runs of events as
        ``(RUN, times, uids, state, backend, slots)`` records (``expand`` turns them into
        tuples); cheaper to serialise than their events one by one. ``on_runs`` (inline
        only): called instead of ``fn`` with the items of a batch that holds runs (the
        session's statistics fold a run in a few C-level passes). The stream keeps runs
        as records while a subscriber of either kind exists, else as their events.
        """
        if not callable(fn):
            from .errors import SessionError
            raise SessionError(f"subscriber must be callable taking a list of events, "
                               f"got {fn!r}")
        if inline:
            self._inline.append(fn)
            if on_runs is not None:
                self._inline_runs[fn] = on_runs
                self._count_run_takers()
        else:
            self._threaded[fn] = _Threaded(fn, f"rhapsody-events-{len(self._threaded)}",
                                           runs=runs)
            self._count_run_takers()
        return fn

    def unsubscribe(self, fn: Subscriber) -> None:
        """Stop delivering to ``fn`` (pending batches still reach a threaded subscriber)."""
        if fn in self._inline:
            self._inline.remove(fn)
            self._inline_runs.pop(fn, None)
            self._count_run_takers()
        worker = self._threaded.pop(fn, None)
        if worker is not None:
            worker.stop()
            self._count_run_takers()

    def _count_run_takers(self) -> None:
        # The session's statistics take runs, so runs stay records in every session:
        # measured, a plain threads session +16% tasks/s, Dragon native +40%
        self._runs_wanted = len(self._inline_runs) + sum(
            w.runs for w in self._threaded.values())

    # -- emitting (any thread) ---------------------------------------------------------
    def emit_run(self, times: float | list, uids: list, state: str, backend: str,
                 slots: object = None) -> None:
        """Emit ``state`` for every task in ``uids`` (``times``/``slots``: one value for all,
        or a list per task). A run only a ``runs=True`` subscriber wants stays one record."""
        if not uids:
            return
        if not self._runs_wanted:
            self._buf.extend(run_events(times, uids, state, backend, slots))
            return
        with self._run_lock:
            self._runs += 1
            self._run_extra += len(uids) - 1
        self._buf.append((RUN, times, uids, state, backend, slots))

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
        """Deliver what has been emitted (at most about ``limit`` events); returns the count."""
        buf = self._buf
        n = len(buf)
        if not n:
            return 0
        if self._runs:
            return self._flush_runs(limit)
        if limit is not None and n > limit:
            n = limit
            self.flush_soon()
        pop = buf.popleft
        batch = [pop() for _ in range(n)]
        self.emitted_total += n
        self._deliver(batch, batch)
        return n

    def _flush_runs(self, limit: int | None) -> int:
        buf = self._buf
        pop = buf.popleft
        items: list[tuple] = []
        n = runs = extra = 0
        left = len(buf)  # what was there: producers may keep appending meanwhile
        while left and (limit is None or n < limit):
            left -= 1
            item = pop()
            items.append(item)
            if item[0] is RUN:
                k = len(item[2])
                runs += 1
                extra += k - 1
                n += k
            else:
                n += 1
        with self._run_lock:
            self._runs -= runs
            self._run_extra -= extra
        if buf:
            self.flush_soon()
        self.emitted_total += n
        self._deliver(None, items)
        return n

    def _deliver(self, batch: list | None, items: list) -> None:
        """``items`` to whoever takes runs, their events (``batch``, expanded on first
        need when None) to everyone else."""
        on_runs = self._inline_runs if batch is None else {}
        for fn in self._inline:
            take = on_runs.get(fn)
            try:
                if take is not None:
                    take(items)
                else:
                    if batch is None:
                        batch = expand(items)
                    fn(batch)
            except Exception:
                log.exception("inline event subscriber %r failed", fn)
        for worker in self._threaded.values():
            if worker.runs:
                worker.put(items)
            else:
                if batch is None:
                    batch = expand(items)
                worker.put(batch)

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
        return len(self._buf) + self._run_extra
